"""Iterative self-refinement of a text-only prediction (Algorithm 2, paper §2.4)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def complementary_block_masks(shape: Sequence[int], block_size: int, rng: np.random.Generator,
                              device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random half of the ``block_size``³ blocks of a volume, and the other half: two (*S) bool masks."""
    grid = [-(-s // block_size) for s in shape]
    coarse = torch.from_numpy(rng.random(grid) < 0.5).to(device)
    fine = coarse.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1).repeat_interleave(block_size, 2)
    fine = fine[tuple(slice(0, s) for s in shape)]
    return fine, ~fine


def self_refine(predict, probabilities: torch.Tensor, rounds: int, block_sizes: Sequence[int] = (4, 8),
                repeats: int = 1, rng: np.random.Generator | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Algorithm 2 (paper §2.4): iterative self-refinement of a text-only prediction.

    Each round turns the current prediction into mask prompts (``P >= threshold``) and predicts again twice, with
    the prompts restricted to a random half of the blocks and to the other half (complementary block masks, block
    size drawn from ``block_sizes``), so no prediction sees its own full mask; the ``2 · repeats`` predictions are
    averaged into the next estimate.

    ``predict``: callable (N, *S) float spatial prompts -> (N, *S) probabilities; ``probabilities`` (N, *S).
    """
    rng = rng if rng is not None else np.random.default_rng()
    for _ in range(rounds):
        prompts = (probabilities >= threshold).float()
        total = torch.zeros_like(probabilities)
        for _ in range(repeats):
            first, second = complementary_block_masks(probabilities.shape[1:], int(rng.choice(block_sizes)), rng,
                                                      probabilities.device)
            total += predict(prompts * first) + predict(prompts * second)
        probabilities = total / (2 * repeats)
    return probabilities
