"""Which prompts a training sample gets (DESIGN §5) and their binary targets.

* :func:`sample_training_prompts` — per sample: positives, negatives only from annotated-but-absent targets,
  other phrasings of present targets as fillers;
* :func:`sample_query_batch` — the same for a batch, padded into :class:`QueryBatch`;
* :class:`TargetLookup` — label map -> per-query binary targets (regions are unions of labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from nnunetv2_medals.datasets.text_prompted import PromptTarget, TextPromptedDataset
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary


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


@dataclass
class QueryBatch:
    """Prompts of one training batch, padded to the largest sample: all (B, N)."""

    target_index: torch.Tensor
    phrasing_index: torch.Tensor
    valid: torch.Tensor


def sample_query_batch(presence: np.ndarray, annotated: np.ndarray, vocabulary: ModelVocabulary,
                       max_queries: int, rng: np.random.Generator, device) -> QueryBatch:
    """Per-sample prompt sampling (:func:`sample_training_prompts`) padded into one batch.

    ``presence``/``annotated``: (B, T) bool. Padded slots point at target 0 / phrasing 0 and are masked out.
    """
    chosen = [sample_training_prompts(presence[b], annotated[b], vocabulary.target_phrasings, max_queries, rng,
                                      target_similarity=vocabulary.target_similarity)
              for b in range(len(presence))]
    n = max(1, max(len(t) for t, _ in chosen))
    target_index = torch.zeros(len(chosen), n, dtype=torch.long)
    phrasing_index = torch.zeros(len(chosen), n, dtype=torch.long)
    valid = torch.zeros(len(chosen), n, dtype=torch.bool)
    for b, (targets, phrasings) in enumerate(chosen):
        target_index[b, :len(targets)] = torch.tensor(targets, dtype=torch.long)
        phrasing_index[b, :len(targets)] = torch.tensor(phrasings, dtype=torch.long)
        valid[b, :len(targets)] = True
    return QueryBatch(target_index.to(device), phrasing_index.to(device), valid.to(device))


def case_annotation_mask(dataset: TextPromptedDataset, keys: Sequence[str]) -> np.ndarray:
    """(B, T) bool: which targets are annotated in each case of the batch."""
    return np.array([dataset.annotated_target_mask(k) for k in keys], dtype=bool)
