"""Simulated spatial prompts (Algorithm 1): degraded versions of the ground truth that stand in for user mask
prompts during training."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class SpatialPromptSimulation:
    """Parameters of Algorithm 1 (reference values, DESIGN §5)."""

    p_zero: float = 0.35
    p_channel_zero: float = 0.1
    block_sizes: tuple[int, ...] = (4, 8, 16, 32)
    p_drop: tuple[float, float] = (0.3, 0.9)
    p_add: tuple[float, float] = (0.0, 0.02)


def _upsample(blocks: torch.Tensor, block: int, spatial: Sequence[int]) -> torch.Tensor:
    """Algorithm 1's ``Upsample``: (..., *grid) block decisions -> (..., *spatial) voxels (blocks of ``block``³)."""
    fine = blocks
    for axis in range(len(spatial)):
        fine = fine.repeat_interleave(block, dim=blocks.ndim - len(spatial) + axis)
    return fine[(..., *[slice(0, int(s)) for s in spatial])]


def _assign_blocks_to_channels(blocks: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1's ``AssignBlocksToChannels(X, N)``: (B, *grid) bool -> (B, N, *grid) bool, every block of X
    handed to a random non-empty subset of the N channels (subset size uniform on 1..N, members uniform), so a
    channel receives a given block with probability (N + 1) / (2N)."""
    shape = (blocks.shape[0], n, *blocks.shape[1:])
    rank = torch.rand(shape, generator=generator, device=blocks.device).argsort(1).argsort(1)
    size = torch.randint(1, n + 1, (blocks.shape[0], 1, *blocks.shape[1:]), generator=generator,
                         device=blocks.device)
    return (rank < size) & blocks[:, None]


def simulate_spatial_prompts(masks: torch.Tensor, valid: torch.Tensor | None = None,
                             params: SpatialPromptSimulation = SpatialPromptSimulation(),
                             generator: np.random.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 (paper §2.2), as its listing is written, per sample of the batch:

    1. with probability ``p_zero`` every prompt is empty (lines 1-3);
    2. ``M_eff``: whole channels of the mask zeroed with probability ``p_channel_zero`` (line 4), ``S_p = M_eff``;
    3. if ``p_drop``/``p_add`` allow any change (line 7): one block size b from ``block_sizes`` and ONE block grid
       for all channels, p_d ~ U(p_drop), p_a ~ U(p_add), ``B_drop = rand < p_d``, ``B_add = (rand < p_a) ∧
       ¬B_drop`` (lines 8-12; added noise never lands on a dropped block);
    4. ``C_keep = AssignBlocksToChannels(¬B_drop, N)``, ``C_add = AssignBlocksToChannels(B_add, N)`` and
       ``S_p = S_p ⊙ C_keep ∨ C_add`` (lines 15-17), binary (line 19).

    Where ours deviates, and why:

    * ``AssignBlocksToChannels`` is not defined in the paper ("random channel assignment of modified blocks"):
      ours hands each block to a random non-empty subset of the channels (size uniform on 1..N), drawn
      independently for C_keep and C_add (:func:`_assign_blocks_to_channels`).
    * Only ``S_p`` is returned (the trainers' contract); the network forms ``S_f`` as the union of the ``S_p``
      channels (:func:`~nnunetv2_medals.network.medals_network.prompt_union_channel`), as it does for user mask
      prompts at inference, instead of the paper's separately perturbed S_f = (∨_c M_eff,c) ⊙ ¬U_drop ∨ U_add
      (lines 6, 14), which would also keep mask inside kept blocks handed to other channels.
    * Blocks are cubes b³ (the paper's ``B`` allows [b_h, b_w, b_d]).
    * Padded queries (``valid`` False) get empty prompts (they are no channels of the paper's M).
    * Block and channel draws come from a torch generator on ``masks``' device, seeded from ``generator``
      (vectorised over the batch; samples are grouped by their block size).

    ``masks``: (B, N, *S) binary; ``valid``: (B, N) bool. Returns (B, N, *S) float in {0, 1}; the union over N is
    the network's ``S_f`` channel (Eq. 1-2). Computed on the final augmented patch at native resolution.
    """
    rng = generator if generator is not None else np.random.default_rng()
    batch, n, *spatial = masks.shape
    device = masks.device
    torch_rng = torch.Generator(device=device)
    torch_rng.manual_seed(int(rng.integers(2 ** 62)))
    empty = torch.from_numpy(rng.random(batch) < params.p_zero).to(device)
    channel_on = torch.from_numpy(rng.random((batch, n)) >= params.p_channel_zero).to(device)
    voxels = (1,) * len(spatial)
    prompts = (masks > 0) & channel_on.view(batch, n, *voxels)                          # S_p = M_eff
    if params.p_drop[1] > 0 or params.p_add[1] > 0:
        blocks = rng.choice(np.asarray(params.block_sizes), batch)
        p_drop = rng.uniform(*params.p_drop, batch)
        p_add = rng.uniform(*params.p_add, batch)
        for block in np.unique(blocks):
            chosen = np.flatnonzero(blocks == block)
            index = torch.from_numpy(chosen).to(device)
            block = int(block)
            grid = [-(-int(s) // block) for s in spatial]
            p_d = torch.as_tensor(p_drop[chosen], dtype=torch.float32, device=device)
            p_a = torch.as_tensor(p_add[chosen], dtype=torch.float32, device=device)
            drop = torch.rand(len(index), *grid, generator=torch_rng, device=device) < p_d.view(-1, *voxels)
            add = (torch.rand(len(index), *grid, generator=torch_rng, device=device)
                   < p_a.view(-1, *voxels)) & ~drop
            keep = _upsample(_assign_blocks_to_channels(~drop, n, torch_rng), block, spatial)
            added = _upsample(_assign_blocks_to_channels(add, n, torch_rng), block, spatial)
            prompts[index] = prompts[index] & keep | added
    prompts &= ~empty.view(batch, 1, *voxels)
    if valid is not None:
        prompts &= valid.to(device=device, dtype=torch.bool).view(batch, n, *voxels)
    return prompts.float()
