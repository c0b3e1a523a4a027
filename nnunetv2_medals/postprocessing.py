"""From per-prompt probabilities to label maps: pure functions on arrays (no nnU-Net, no files).

* :func:`probabilities_to_label_map` — argmax over prompts where the best probability reaches 0.5;
* :func:`keep_confident_components` — Algorithm 3 (paper §2.9), per semantic class;
* :func:`number_instances` — instance prompts: connected components, small ones dropped, numbered 1..K.
"""
from __future__ import annotations

from typing import Sequence

import cc3d
import numpy as np
from scipy import ndimage


def probabilities_to_label_map(probabilities: np.ndarray, labels: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """``probabilities`` (N, *S) -> label map (*S) holding ``labels[n]`` where prompt n is the most probable and
    its probability is at least ``threshold``; 0 elsewhere."""
    if len(labels) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability maps but {len(labels)} labels")
    best = probabilities.argmax(0)
    lookup = np.asarray(labels, dtype=np.uint16)
    return np.where(probabilities.max(0) >= threshold, lookup[best], 0).astype(np.uint16)


def keep_confident_components(mask: np.ndarray, probabilities: np.ndarray, top_k: int = 3, tau: float = 0.1,
                              min_confidence: float = 0.86) -> np.ndarray:
    """Algorithm 3: keep the confident connected components of one class's mask.

    Components are 6-connected; only the ``top_k`` largest are candidates. Each candidate's confidence is its mean
    probability. Candidates above ``min_confidence`` that are within ``tau`` of the best confidence are kept; when
    no candidate is that confident, the most confident one alone is kept (a class prompted is expected present).

    ``mask`` (*S) bool, ``probabilities`` (*S) float -> (*S) bool.
    """
    mask = mask.astype(bool, copy=False)
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return mask.copy()
    box = boxes[0]  # all work happens inside the mask's bounding box (small structures in big images)
    components, n = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=6, return_N=True)
    if n <= 1:
        return mask.copy()
    ids = np.arange(1, n + 1)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    candidates = ids[np.argsort(-sizes, kind="stable")[:top_k]]
    confidence = ndimage.mean(probabilities[box].astype(np.float32), components, candidates)
    best = confidence.max()
    keep = candidates[(confidence > min_confidence) & (confidence >= best - tau)]
    if keep.size == 0:
        keep = candidates[[int(np.argmax(confidence))]]
    out = np.zeros_like(mask)
    out[box] = np.isin(components, keep)
    return out


def number_instances(mask: np.ndarray, min_voxels: int = 10) -> np.ndarray:
    """Instance prompts: 6-connected components of ``mask`` with at least ``min_voxels`` voxels, numbered 1..K
    by size (largest first). Returns (*S) uint16 (uint32 beyond 65535 instances)."""
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return np.zeros(mask.shape, np.uint16)
    box = boxes[0]  # components are found inside the mask's bounding box (big images, few structures)
    components, n = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=6, return_N=True)
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    kept = order[sizes[order] >= min_voxels]
    remap = np.zeros(n + 1, np.uint32)
    remap[kept + 1] = np.arange(1, len(kept) + 1)
    dtype = np.uint16 if len(kept) < 65536 else np.uint32
    out = np.zeros(mask.shape, dtype)
    out[box] = remap[components]
    return out


def postprocess_label_map(label_map: np.ndarray, probabilities: np.ndarray, labels: Sequence[int],
                          instance: Sequence[bool], min_instance_voxels: int = 10) -> tuple[np.ndarray, dict]:
    """Apply Algorithm 3 to every semantic prompt and the small-component rule to instance prompts.

    Returns the cleaned label map and ``{label: instance map}`` for instance prompts (numbered components).
    """
    out = label_map.copy()
    instances = {}
    for n, (label, is_instance) in enumerate(zip(labels, instance)):
        mask = label_map == label
        if is_instance:
            numbered = number_instances(mask, min_instance_voxels)
            out[mask & (numbered == 0)] = 0
            instances[label] = numbered
        elif mask.any():
            out[mask & ~keep_confident_components(mask, probabilities[n])] = 0
    return out, instances
