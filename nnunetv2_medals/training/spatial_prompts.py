"""Simulated spatial prompts (Algorithm 1): degraded versions of the ground truth that stand in for user mask
prompts during training."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class SpatialPromptSimulation:
    """Parameters of Algorithm 1 (reference values, DESIGN §5)."""

    p_zero: float = 0.35
    p_channel_zero: float = 0.1
    block_sizes: tuple[int, ...] = (4, 8, 16, 32)
    p_drop: tuple[float, float] = (0.3, 0.9)
    p_add: tuple[float, float] = (0.0, 0.02)


def _block_noise(shape_nb: Sequence[int], spatial: Sequence[int], block: int, p: torch.Tensor,
                 device) -> torch.Tensor:
    """(N, *S) bool: independent Bernoulli(p) decisions per (channel, block³), expanded to voxels."""
    grid = [-(-s // block) for s in spatial]
    coarse = torch.rand(*shape_nb, *grid, device=device) < p
    fine = F.interpolate(coarse[None].float(), scale_factor=block, mode="nearest")[0] > 0
    return fine[(slice(None),) + tuple(slice(0, s) for s in spatial)]


def simulate_spatial_prompts(masks: torch.Tensor, valid: torch.Tensor | None = None,
                             params: SpatialPromptSimulation = SpatialPromptSimulation(),
                             generator: np.random.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 (paper §2.2): simulated spatial prompts from ground-truth masks.

    Per sample: with probability ``p_zero`` every prompt is empty (text-only training). Otherwise one block size b
    is drawn from ``block_sizes`` and, per channel, the volume is split into b³ blocks: blocks of the mask survive
    with probability ``1 - p_drop`` (so each kept block survives in a random subset of channels), blocks anywhere
    are added with probability ``p_add`` (false-positive hints), and whole channels are zeroed with probability
    ``p_channel_zero``. ``p_drop``/``p_add`` are drawn per sample from their ranges. Computed on the final
    augmented patch at native resolution.

    ``masks``: (B, N, *S) binary; ``valid``: (B, N) bool (padded queries get empty prompts). Returns (B, N, *S)
    float in {0, 1}; the union over N is the network's ``S_f`` channel (Eq. 1–2).
    """
    rng = generator if generator is not None else np.random.default_rng()
    out = torch.zeros_like(masks, dtype=torch.float32)
    batch, n, *spatial = masks.shape
    for b in range(batch):
        if rng.random() < params.p_zero:
            continue
        block = int(rng.choice(params.block_sizes))
        p_drop = float(rng.uniform(*params.p_drop))
        p_add = float(rng.uniform(*params.p_add))
        keep = _block_noise((n,), spatial, block, torch.tensor(1.0 - p_drop), masks.device)
        add = _block_noise((n,), spatial, block, torch.tensor(p_add), masks.device) if p_add > 0 else False
        prompt = (masks[b] > 0) & keep | add
        channel_on = torch.from_numpy(rng.random(n) >= params.p_channel_zero).to(masks.device)
        if valid is not None:
            channel_on &= valid[b].to(masks.device)
        out[b] = (prompt & channel_on.view(n, *[1] * len(spatial))).float()
    return out
