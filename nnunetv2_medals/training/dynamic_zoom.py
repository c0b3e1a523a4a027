"""Dynamic resampling in training (paper §2.5): typical target sizes, and zooming a batch in on its smallest
target."""
from __future__ import annotations

from typing import Mapping, Sequence

import cc3d
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunetv2_medals.resampling import dynamic_spacing


def case_subset(identifiers: Sequence[str], max_cases: int = 50, seed: int = 0) -> list[str]:
    """The training cases the trainer measures its targets on: all, or a fixed random ``max_cases`` of them."""
    identifiers = list(identifiers)
    if len(identifiers) > max_cases:
        identifiers = list(np.random.default_rng(seed).choice(identifiers, max_cases, replace=False))
    return identifiers


def box_sizes_mm(seg: np.ndarray, targets, spacing: Sequence[float]) -> dict[str, list[np.ndarray]]:
    """Bounding-box sizes (mm, per network axis) of every target present in one case's label map ``seg`` (*S, at
    ``spacing``): regions use their union, instance targets one box per instance (one lymph node, not the spread
    of all of them)."""
    spacing = np.asarray(spacing, float)
    sizes: dict[str, list[np.ndarray]] = {}
    for t in targets:
        mask = np.isin(seg, t.label_values)
        if not mask.any():
            continue
        if t.instance:
            components = cc3d.connected_components(mask.astype(np.uint8), connectivity=6)
            boxes = [b for b in ndimage.find_objects(components) if b is not None]
        else:
            boxes = ndimage.find_objects(mask.astype(np.uint8))
        sizes[t.name] = [np.array([s.stop - s.start for s in b]) * spacing for b in boxes]
    return sizes


def median_extents_mm(sizes: Mapping[str, Sequence[np.ndarray]]) -> dict[str, list[float]]:
    """Median bounding-box extent (mm, per network axis) of every target over the training cases'
    :func:`box_sizes_mm`: what dynamic resampling (paper §2.5) needs to know about "the size of the structure a
    prompt asks for"."""
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
    Axes on which that spacing is coarser than the plans' (a zoom-out, e.g. a big structure in an image acquired
    coarser than the plans) keep zoom 1: the patch was already cut and holds no context beyond its border, and
    padding would teach the network an artificial edge; inference does zoom out on such axes. Returns how many
    samples were zoomed.

    ``presence`` (B, T) bool, ``extents[t]`` the typical extent (mm) of target t or None, ``original_spacings[b]``
    sample b's original spacing (network axis order).
    """
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
        # an axis the rule would zoom out keeps zoom 1: the patch holds no context beyond its border to zoom out
        # into (before, a zoom < 1 gave a crop box larger than the patch and a negative start)
        zoom = np.maximum(np.asarray(spacing, float) / np.asarray(new, float), 1.0)
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
