"""Iterative self-refinement of a prediction (Algorithm 2, paper §2.4), and the complementary-mask
prediction it is built on (also used when stage-1 masks are stage-2 prompts, paper §2.6)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


def complementary_block_masks(shape: Sequence[int], block_size: int, rng: np.random.Generator,
                              device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2, lines 9-14: ``M`` and ``M_c = 1 - M`` as two (*S) bool masks.

    ``block_size`` is the block *edge in voxels* (the paper's b: N_h = ceil(H / b) blocks along an axis of H voxels;
    b in {4, 8}), not the number of blocks per axis. Exactly N_selected = max(1, floor(N_h N_w N_d / 2)) of the
    blocks are drawn without replacement for ``M`` (the paper's ``RandomMask``), the rest form ``M_c``.
    """
    grid = [-(-int(s) // block_size) for s in shape]
    n_blocks = int(np.prod(grid))
    coarse = np.zeros(n_blocks, bool)
    coarse[rng.choice(n_blocks, max(1, n_blocks // 2), replace=False)] = True
    fine = torch.from_numpy(coarse.reshape(grid)).to(device)
    for axis in range(len(grid)):
        fine = fine.repeat_interleave(block_size, axis)
    fine = fine[tuple(slice(0, int(s)) for s in shape)]
    return fine, ~fine


def complementary_prompt_prediction(predict: Callable[[torch.Tensor], torch.Tensor], prompts: torch.Tensor,
                                    block_sizes: Sequence[int] = (4, 8), repeats: int = 1,
                                    rng: np.random.Generator | None = None) -> torch.Tensor:
    """Algorithm 2, lines 7-20: predict with mask prompts that came from a prediction, without copying them.

    Per repetition r: a block size b from ``block_sizes`` (edge in voxels), complementary block masks ``M``/``M_c``
    (:func:`complementary_block_masks`), ``P1 = predict(prompts · M)``, ``P2 = predict(prompts · M_c)`` and

        P_r = P1 · M_c + P2 · M

    so every voxel takes the pass in which its own prompt was hidden (the prompt elsewhere still gives context).
    Returns the mean of the ``repeats`` P_r (the paper's R = 1).

    ``predict``: (N, *S) spatial prompts -> (N, *S) probabilities; ``prompts`` (N, *S). Used by self-refinement
    (:func:`self_refine`) and by two-stage prediction with stage-1 masks as stage-2 prompts. The block grid covers
    the whole network-grid volume (ours predicts a case with a sliding window per pass; the paper masks each patch,
    i.e. its grid starts at every patch's corner): the same block size, a different grid origin.
    """
    rng = rng if rng is not None else np.random.default_rng()
    total = None
    for _ in range(repeats):
        mask, complement = complementary_block_masks(prompts.shape[1:], int(rng.choice(block_sizes)), rng,
                                                     prompts.device)
        first = predict(prompts * mask)
        second = predict(prompts * complement)
        combined = torch.where(complement.to(first.device), first, second)
        total = combined if total is None else total + combined
    return total / repeats


def self_refine(predict, probabilities: torch.Tensor, rounds: int, block_sizes: Sequence[int] = (4, 8),
                repeats: int = 1, rng: np.random.Generator | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Algorithm 2 (paper §2.4): iterative self-refinement of a prediction.

    ``probabilities`` is the first prediction P^(1), the paper's lines 3-5 prompted with the initial S_p: zero in
    text-only mode, the user's masks in hybrid mode, stage-1 masks (after their complementary pass) in two-stage
    prediction. §2.4's prose pairs self-refinement with the text-only mode; refining the other two is our reading
    of the listing, which takes any initial S_p. Each of the ``rounds`` turns the current prediction into mask
    prompts and predicts again with :func:`complementary_prompt_prediction` (P = P1 · M_c + P2 · M, blocks of
    ``block_sizes`` voxels per edge, ``repeats`` = the paper's R), which becomes the next estimate.

    Deviations: the prompts are the binarised prediction (``P >= threshold``), not the probabilities P^(t) the
    paper feeds back, because the network was trained on binary prompts (Algorithm 1 returns {0, 1}). For
    ``rounds`` = 1 this matches the listing with T = 1, apart from the binarised prompts and the whole-volume block
    grid (:func:`complementary_prompt_prediction`). For ``rounds`` >= 2 the listing also runs, at the start of each
    iteration, one pass prompted with the *whole* previous unrefined prediction (lines 3-6) and refines that; ours
    chains the refined estimates instead (one fewer pass per round, and no voxel's refined value comes from a pass
    that saw its own prompt).

    ``predict``: callable (N, *S) float spatial prompts -> (N, *S) probabilities; ``probabilities`` (N, *S).
    """
    rng = rng if rng is not None else np.random.default_rng()
    for _ in range(rounds):
        prompts = (probabilities >= threshold).float()
        probabilities = complementary_prompt_prediction(predict, prompts, block_sizes, repeats, rng)
    return probabilities
