"""Training-time prompts: which prompts a sample gets, their binary targets, and simulated spatial prompts.

* :func:`sample_training_prompts` — per sample: positives, negatives only from annotated-but-absent targets,
  other phrasings of present targets as fillers (DESIGN §5).
* :class:`TargetLookup` — label map -> per-query binary targets (regions are unions of labels).
* :func:`simulate_spatial_prompts` — Algorithm 1 of the paper: degraded versions of the ground truth that stand in
  for user mask prompts during training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from nnunetv2_medals.datasets import PromptTarget


def sample_training_prompts(present: np.ndarray, annotated: np.ndarray, target_phrasings: Sequence[Sequence[int]],
                            max_queries: int, rng: np.random.Generator, negative_ratio: float = 0.33,
                            target_similarity: np.ndarray | None = None,
                            temperature: float = 0.1) -> tuple[list[int], list[int]]:
    """Choose one sample's prompts: ``(target index per query, phrasing id per query)``, at most ``max_queries``.

    * positives: every target present in the patch and annotated in its case, one random phrasing each (a random
      subset when there are more than ``max_queries``);
    * negatives: up to ``⌊negative_ratio · #positives⌋`` targets that are annotated but absent (one when the patch
      holds no positive), never unannotated ones — absent there may just mean unlabelled. With
      ``target_similarity`` (T, T) (cosine of the targets' text embeddings) negatives are drawn with weights
      ``exp(max similarity to a positive / temperature)``: "right kidney" is the likely negative of a patch that
      shows only the left one, which is what teaches laterality;
    * fillers: further phrasings of present targets until ``max_queries`` (unused phrasings first).

    ``present``/``annotated``: (T,) bool; ``target_phrasings[t]``: the phrasing ids of target t.
    """
    positives = np.flatnonzero(present & annotated)
    candidates = np.flatnonzero(annotated & ~present)
    rng.shuffle(positives)
    positives = positives[:max_queries]
    n_neg = int(negative_ratio * len(positives)) if len(positives) else 1
    n_neg = min(n_neg, len(candidates), max_queries - len(positives))
    weights = None
    if target_similarity is not None and len(positives) and n_neg > 0:
        closeness = target_similarity[np.ix_(candidates, positives)].max(1)
        weights = np.exp((closeness - closeness.max()) / temperature)
        weights /= weights.sum()
    negatives = rng.choice(candidates, n_neg, replace=False, p=weights) if n_neg > 0 else np.zeros(0, int)
    targets = [int(t) for t in (*positives, *negatives)]
    phrasings = [int(rng.choice(target_phrasings[t])) for t in targets]
    unused = {int(t): [p for p in target_phrasings[t] if p not in phrasings] for t in positives}
    while positives.size and len(targets) < max_queries:
        t = int(rng.choice(positives))
        pool = unused[t] or list(target_phrasings[t])
        p = pool.pop(int(rng.integers(len(pool)))) if unused[t] else int(rng.choice(pool))
        targets.append(t)
        phrasings.append(p)
    return targets, phrasings


class TargetLookup:
    """Label maps -> per-target presence and per-query binary masks, on any device.

    A lookup table ``(max label + 1, T)`` says which label values belong to which target, so a region's mask is the
    union of its labels without a Python loop over voxels.
    """

    def __init__(self, targets: Sequence[PromptTarget]):
        max_label = max(v for t in targets for v in t.label_values)
        table = torch.zeros(max_label + 1, len(targets), dtype=torch.bool)
        for i, t in enumerate(targets):
            table[list(t.label_values), i] = True
        self.table = table

    def _seg(self, seg: torch.Tensor) -> torch.Tensor:
        """(B, 1, *S) or (B, *S) label map -> (B, S_flat) long, values outside the table mapped to background."""
        seg = seg[:, 0] if seg.dim() >= 5 else seg
        seg = seg.long().flatten(1)
        return torch.where((seg >= 0) & (seg < self.table.shape[0]), seg, torch.zeros_like(seg))

    def presence(self, seg: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: is each target present in each sample?"""
        table = self.table.to(seg.device)
        counts = torch.stack([torch.bincount(s, minlength=table.shape[0]) for s in self._seg(seg)])
        return (counts[:, :, None] > 0).logical_and(table[None]).any(1)

    def masks(self, seg: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
        """(B, N, *S) float targets for the queries' targets ``target_index`` (B, N) on label map ``seg``."""
        spatial = seg.shape[2:] if seg.dim() >= 5 else seg.shape[1:]
        flat = self._seg(seg)
        per_query = self.table.to(seg.device).T.to(torch.float16)[target_index]  # (B, N, V)
        out = torch.gather(per_query, 2, flat[:, None, :].expand(-1, target_index.shape[1], -1))
        return out.view(*target_index.shape, *spatial).float()


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
