"""The BiomedSegFM challenge metrics as pure functions on arrays.

* :func:`dice` - DSC of two binary masks.
* :func:`normalized_surface_dice` - NSD at a tolerance in mm (2 mm in the challenge): the fraction of both masks'
  surface voxels that lie within the tolerance of the other mask's surface. Surface voxels are the mask voxels with a
  6-neighbour outside the mask; distances are Euclidean in mm with the spacing given in the array's axis order.
* :func:`instance_f1` - the prediction (binary) is split into connected components (cc3d, 6-connectivity), matched
  one-to-one to the ground-truth instances by the Hungarian algorithm on IoU; a pair with IoU >= 0.5 is a true
  positive. F1 = 2TP / (2TP + FP + FN), 0 when nothing is predicted; DSC-TP is the mean Dice of the true-positive
  pairs.

Conventions for empty masks follow the challenge: a class is scored only where the ground truth holds it (the callers
skip absent classes); the functions themselves return 1.0 / 0.0 for the degenerate cases and say so in docstrings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P∩G| / (|P|+|G|); 1.0 when both are empty."""
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    denominator = int(pred.sum()) + int(gt.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / denominator


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one 6-neighbour outside the mask (the volume border counts as outside)."""
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        return mask.copy()
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def _distance_to(surface: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm from every voxel to the nearest voxel of ``surface``."""
    return ndimage.distance_transform_edt(~surface, sampling=spacing)


def normalized_surface_dice(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float = 2.0) -> float:
    """NSD at ``tolerance_mm``; ``spacing`` is in the array's axis order. 1.0 when both are empty, 0.0 when exactly
    one is."""
    pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match an array with {pred.ndim} axes")
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    # both distance maps only need the masks' joint bounding box plus the tolerance
    box = _bounding_box(pred | gt, margin=[int(np.ceil(tolerance_mm / s)) + 1 for s in spacing])
    pred, gt = pred[box], gt[box]
    surf_p, surf_g = surface_voxels(pred), surface_voxels(gt)
    near_p = _distance_to(surf_g, spacing)[surf_p] <= tolerance_mm
    near_g = _distance_to(surf_p, spacing)[surf_g] <= tolerance_mm
    return (int(near_p.sum()) + int(near_g.sum())) / (int(surf_p.sum()) + int(surf_g.sum()))


def _bounding_box(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    coords = np.nonzero(mask)
    return tuple(slice(max(int(c.min()) - m, 0), min(int(c.max()) + m + 1, n))
                 for c, m, n in zip(coords, margin, mask.shape))


@dataclass(frozen=True)
class InstanceScores:
    f1: float
    dsc_tp: float | None      # mean Dice of true-positive pairs; None without any true positive
    tp: int
    fp: int
    fn: int


def connected_instances(mask: np.ndarray) -> np.ndarray:
    """Numbered 6-connected components of a binary mask (uint32, 0 = background)."""
    import cc3d

    return cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), connectivity=6).astype(np.uint32)


def instance_f1(pred: np.ndarray, gt_instances: np.ndarray, iou_threshold: float = 0.5,
                pred_is_instances: bool = False) -> InstanceScores:
    """Instance F1 at IoU >= ``iou_threshold`` and DSC-TP (challenge definition).

    ``pred`` is binary (split here with cc3d, 6-connectivity) unless ``pred_is_instances``; ``gt_instances`` holds one
    id per instance (0 = background). No prediction -> F1 = 0; no ground truth and no prediction -> F1 = 1.
    """
    from scipy.optimize import linear_sum_assignment

    pred_ids = pred.astype(np.uint32) if pred_is_instances else connected_instances(pred > 0)
    gt_ids = np.asarray(gt_instances)
    pred_labels = np.unique(pred_ids[pred_ids > 0])
    gt_labels = np.unique(gt_ids[gt_ids > 0])
    n_pred, n_gt = len(pred_labels), len(gt_labels)
    if n_pred == 0 or n_gt == 0:
        f1 = 1.0 if n_pred == n_gt == 0 else 0.0
        return InstanceScores(f1, None, 0, n_pred, n_gt)
    # dense re-numbering, then every (pred, gt) overlap count in one bincount
    p = np.searchsorted(pred_labels, pred_ids[pred_ids > 0]) + 1
    p_full = np.zeros(pred_ids.shape, np.int64)
    p_full[pred_ids > 0] = p
    g_full = np.zeros(gt_ids.shape, np.int64)
    g_full[gt_ids > 0] = np.searchsorted(gt_labels, gt_ids[gt_ids > 0]) + 1
    both = (p_full > 0) & (g_full > 0)
    overlap = np.bincount(p_full[both] * (n_gt + 1) + g_full[both],
                          minlength=(n_pred + 1) * (n_gt + 1)).reshape(n_pred + 1, n_gt + 1)[1:, 1:]
    size_p = np.bincount(p_full.ravel(), minlength=n_pred + 1)[1:]
    size_g = np.bincount(g_full.ravel(), minlength=n_gt + 1)[1:]
    union = size_p[:, None] + size_g[None, :] - overlap
    iou = overlap / np.maximum(union, 1)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    matched = iou[rows, cols] >= iou_threshold
    tp = int(matched.sum())
    fp, fn = n_pred - tp, n_gt - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    dsc_tp = None
    if tp:
        r, c = rows[matched], cols[matched]
        dsc_tp = float(np.mean(2 * overlap[r, c] / (size_p[r] + size_g[c])))
    return InstanceScores(float(f1), dsc_tp, tp, fp, fn)
