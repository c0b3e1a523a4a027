"""Pieces MedalSTrainer wires into nnU-Net's training loop: the trained vocabulary, query batches, the schedule."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from nnunetv2_medals.datasets import TextPromptedDataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.prompts import sample_training_prompts
from nnunetv2_medals.text_prompts.encoder import TextEncoder


@dataclass
class TrainingVocabulary:
    """Every phrasing of every target, embedded once when training starts (never inside a step).

    ``embeddings`` (P, L) follow ``phrasings``; ``target_phrasings[t]`` are the phrasing ids of target t; the
    first phrasing of each target is its stored class embedding (what stock ``nnUNetv2_predict`` segments with).
    """

    dataset: TextPromptedDataset
    phrasings: list[str]
    embeddings: np.ndarray
    target_phrasings: list[list[int]]
    encoder: dict

    @classmethod
    def build(cls, dataset: TextPromptedDataset, encoder_record: Mapping, plans_file: str = "plans",
              device: str = "cpu") -> "TrainingVocabulary":
        """Embed all phrasings with the encoder recorded in the plans; refuse a different encoder."""
        encoder = TextEncoder(encoder_record.get("path"), device=device)
        if encoder.id != encoder_record.get("id"):
            raise MedalSInputError(plans_file, "medals.text_encoder.id",
                                   f"the plans were made with text encoder {encoder_record.get('id')!r} but "
                                   f"{encoder.encoder_dir} is {encoder.id!r}; re-plan or restore that encoder")
        phrasings = dataset.all_phrasings()
        index = {p: i for i, p in enumerate(phrasings)}
        return cls(dataset, phrasings, encoder.encode(phrasings),
                   [[index[p] for p in t.prompts] for t in dataset.targets], dict(encoder_record))

    @property
    def class_embeddings(self) -> np.ndarray:
        return self.embeddings[[ids[0] for ids in self.target_phrasings]]

    @functools.cached_property
    def target_similarity(self) -> np.ndarray:
        """(T, T) cosine similarity of the targets' mean phrasing embeddings (for hard-negative sampling)."""
        means = np.stack([self.embeddings[ids].mean(0) for ids in self.target_phrasings])
        means /= np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)
        return means @ means.T

    def to_state(self) -> dict:
        """Plain-data record stored with the network weights (see ``MedalSNetwork.get_extra_state``)."""
        return {
            "text_encoder": dict(self.encoder),
            "modality": self.dataset.modality,
            "targets": [{"name": t.name, "label_values": list(t.label_values), "instance": t.instance,
                         "is_region": t.is_region, "phrasings": list(t.prompts)} for t in self.dataset.targets],
            "phrasings": list(self.phrasings),
            "phrasing_embeddings": self.embeddings.astype(np.float32),
        }


@dataclass
class QueryBatch:
    """Prompts of one training batch, padded to the largest sample: all (B, N)."""

    target_index: torch.Tensor
    phrasing_index: torch.Tensor
    valid: torch.Tensor


def sample_query_batch(presence: np.ndarray, annotated: np.ndarray, vocabulary: TrainingVocabulary,
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


def nnunet_deep_supervision_weights(n_outputs: int, ddp: bool) -> np.ndarray:
    """nnU-Net's deep-supervision weights: 1/2^i, the lowest output off (1e-6 under DDP so it stays in the graph)."""
    weights = np.array([1 / (2 ** i) for i in range(n_outputs)])
    weights[-1] = 1e-6 if ddp else 0
    return weights / weights.sum()


class CosineLRScheduler(torch.optim.lr_scheduler._LRScheduler):
    """Cosine decay from ``initial_lr`` to 0 over ``max_steps`` epochs, stepped by nnU-Net with the epoch number."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, current_step: int | None = None):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(current_step, self.max_steps) / self.max_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def case_annotation_mask(dataset: TextPromptedDataset, keys: Sequence[str]) -> np.ndarray:
    """(B, T) bool: which targets are annotated in each case of the batch."""
    return np.array([dataset.annotated_target_mask(k) for k in keys], dtype=bool)


def target_extents_mm(dataset, identifiers: Sequence[str], targets, spacing: Sequence[float],
                      max_cases: int = 50, seed: int = 0) -> dict[str, list[float]]:
    """Median bounding-box extent (mm, per network axis) of every target over the training cases: what dynamic
    resampling (paper §2.5) needs to know about "the size of the structure a prompt asks for".

    ``dataset`` is nnU-Net's preprocessed dataset (``load_case`` gives the seg at ``spacing``); regions use their
    union, instance targets the extent of single instances (one lymph node, not the spread of all of them). At most
    ``max_cases`` cases (a random subset) are read.
    """
    import cc3d
    from scipy import ndimage

    identifiers = list(identifiers)
    if len(identifiers) > max_cases:
        identifiers = list(np.random.default_rng(seed).choice(identifiers, max_cases, replace=False))
    sizes: dict[str, list[np.ndarray]] = {t.name: [] for t in targets}
    spacing = np.asarray(spacing, float)
    for identifier in identifiers:
        seg = np.asarray(dataset.load_case(identifier)[1][0])
        for t in targets:
            mask = np.isin(seg, t.label_values)
            if not mask.any():
                continue
            if t.instance:
                components = cc3d.connected_components(mask.astype(np.uint8), connectivity=6)
                boxes = [b for b in ndimage.find_objects(components) if b is not None]
            else:
                boxes = ndimage.find_objects(mask.astype(np.uint8))
            sizes[t.name] += [np.array([s.stop - s.start for s in b]) * spacing for b in boxes]
    return {name: [round(float(v), 2) for v in np.median(np.stack(found), 0)]
            for name, found in sizes.items() if found}


def zoom_to_smallest_target(data: torch.Tensor, segs: list[torch.Tensor], presence: np.ndarray,
                            target_lookup, extents: Sequence[Sequence[float] | None], spacing: Sequence[float],
                            original_spacings: Sequence[Sequence[float]], alpha: float, probability: float,
                            rng: np.random.Generator) -> int:
    """Dynamic resampling in training (paper §2.5), in place on a batch: with ``probability`` per sample, the
    patch (at the plans' ``spacing``) is resampled to the spacing :func:`dynamic_spacing` gives for the smallest
    target present in it and the case's original spacing - so it zooms in only where the original image was finer
    than the plans, as inference would: a box of ``patch / zoom`` voxels centred on that target is cut out and
    resized back to the patch (trilinear for the image, nearest for the label maps at every deep-supervision scale).
    Returns how many samples were zoomed.

    ``presence`` (B, T) bool, ``extents[t]`` the typical extent (mm) of target t or None, ``original_spacings[b]``
    sample b's original spacing (network axis order).
    """
    import torch.nn.functional as F

    from nnunetv2_medals.resampling import dynamic_spacing

    patch = data.shape[2:]
    zoomed = 0
    for b in range(data.shape[0]):
        if rng.random() >= probability:
            continue
        known = [t for t in np.flatnonzero(presence[b]) if extents[t] is not None]
        if not known:
            continue
        smallest = min(known, key=lambda t: float(np.prod(extents[t])))
        new = dynamic_spacing(original_spacings[b], spacing, patch, extents[smallest], alpha)
        zoom = np.asarray(spacing, float) / np.asarray(new, float)
        if np.all(zoom <= 1.0 + 1e-6):
            continue
        mask = target_lookup.masks(segs[0][b:b + 1], torch.tensor([[smallest]], device=segs[0].device))[0, 0]
        centre = torch.nonzero(mask).float().mean(0).cpu().numpy()
        size = np.maximum(np.round(np.asarray(patch) / zoom), 1)
        start = np.clip(np.round(centre - size / 2), 0, np.asarray(patch) - size)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size))
        data[b] = F.interpolate(data[b:b + 1][(slice(None), slice(None), *box)], size=tuple(patch),
                                mode="trilinear", align_corners=False)[0]
        for i, seg in enumerate(segs):
            shape = seg.shape[2:]
            scale = np.asarray(shape) / np.asarray(patch)
            level_box = tuple(slice(int(np.floor(s.start * f)), max(int(np.floor(s.start * f)) + 1,
                                                                   int(np.ceil(s.stop * f))))
                              for s, f in zip(box, scale))
            crop = seg[b:b + 1][(slice(None), slice(None), *level_box)].float()
            segs[i][b] = F.interpolate(crop, size=tuple(shape), mode="nearest")[0].to(seg.dtype)
        zoomed += 1
    return zoomed
