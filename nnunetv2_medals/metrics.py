"""The BiomedSegFM challenge metrics as pure functions on arrays.

* :func:`dice` - DSC of two binary masks.
* :func:`normalized_surface_dice` - NSD at a tolerance in mm (2 mm in the challenge): the fraction of both masks'
  surface voxels that lie within the tolerance of the other mask's surface. Surface voxels are the mask voxels with a
  6-neighbour outside the mask; distances are Euclidean in mm with the spacing given in the array's axis order.
* :func:`instance_f1` - the prediction (binary) is split into connected components (cc3d, 6-connectivity), matched
  one-to-one to the ground-truth instances as the challenge's script does (:func:`match_instances`); a pair with
  IoU >= 0.5 is a true positive. F1 = 2TP / (2TP + FP + FN), 0 when nothing is predicted; DSC-TP is the mean Dice of
  the true-positive pairs, 0 without any.
* :func:`challenge_semantic_case` / :func:`challenge_instance_case` - one case scored by the rules of the
  challenge's ``CVPR25_text_eval.py`` (see ``evaluate --challenge``).

The functions return 1.0 / 0.0 for degenerate (empty) masks and say so in their docstrings; which cases count is the
callers' business (evaluation.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


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
    dsc_tp: float             # mean Dice of the true-positive pairs; 0.0 without any true positive
    tp: int
    fp: int
    fn: int


def connected_instances(mask: np.ndarray) -> np.ndarray:
    """Numbered 6-connected components of a binary mask (uint32, 0 = background)."""
    return cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), connectivity=6).astype(np.uint32)


def relabel_sequential(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..K in increasing order of the old ids (0 stays background); int64."""
    values, inverse = np.unique(ids, return_inverse=True)
    new = np.arange(len(values)) + (1 if values[0] != 0 else 0)
    return new[inverse.reshape(ids.shape)]


def _overlaps(pred_ids: np.ndarray, gt_ids: np.ndarray):
    """(overlap, pred sizes, gt sizes) of sequential id maps 1..n (0 = background)."""
    n_pred, n_gt = int(pred_ids.max()), int(gt_ids.max())
    both = (pred_ids > 0) & (gt_ids > 0)
    overlap = np.bincount(pred_ids[both] * (n_gt + 1) + gt_ids[both],
                          minlength=(n_pred + 1) * (n_gt + 1)).reshape(n_pred + 1, n_gt + 1)[1:, 1:]
    size_p = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)[1:]
    size_g = np.bincount(gt_ids.ravel(), minlength=n_gt + 1)[1:]
    return overlap, size_p, size_g


def match_instances(iou: np.ndarray, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The challenge's matching: Hungarian algorithm on cost -[IoU >= t] - IoU / (2n), n = min(#pred, #gt); it first
    maximises the number of pairs reaching the threshold, IoU only breaks ties. Returns the (rows, cols) of the true
    positives (pairs with IoU >= t)."""
    n = min(iou.shape)
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(-(iou >= iou_threshold).astype(float) - iou / (2 * n))
    ok = iou[rows, cols] >= iou_threshold
    return rows[ok], cols[ok]


def instance_f1(pred: np.ndarray, gt_instances: np.ndarray, iou_threshold: float = 0.5,
                pred_is_instances: bool = False) -> InstanceScores:
    """Instance F1 at IoU >= ``iou_threshold`` (matching: :func:`match_instances`) and DSC-TP.

    ``pred`` is binary (split here with cc3d, 6-connectivity) unless ``pred_is_instances``; ``gt_instances`` holds one
    id per instance (0 = background). F1 = 2TP / (2TP + FP + FN): 0 when nothing is predicted or nothing is there;
    1 (and DSC-TP 1) only when both are empty. DSC-TP = mean Dice of the true-positive pairs, 0 without one.
    """
    pred_ids = relabel_sequential(np.asarray(pred)) if pred_is_instances else connected_instances(pred > 0)
    gt_ids = relabel_sequential(np.asarray(gt_instances))
    n_pred, n_gt = int(pred_ids.max()), int(gt_ids.max())
    if n_pred == 0 or n_gt == 0:
        both_empty = float(n_pred == n_gt == 0)
        return InstanceScores(both_empty, both_empty, 0, n_pred, n_gt)
    overlap, size_p, size_g = _overlaps(pred_ids.astype(np.int64), gt_ids)
    iou = overlap / (size_p[:, None] + size_g[None, :] - overlap)
    rows, cols = match_instances(iou, iou_threshold)
    tp = len(rows)
    fp, fn = n_pred - tp, n_gt - tp
    dsc_tp = float(np.mean(2 * overlap[rows, cols] / (size_p[rows] + size_g[cols]))) if tp else 0.0
    return InstanceScores(2 * tp / (2 * tp + fp + fn), dsc_tp, tp, fp, fn)


def _nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def challenge_semantic_case(gt: np.ndarray, seg: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float],
                            tolerance_mm: float = 2.0) -> tuple[float, float]:
    """(DSC, NSD) of one semantic case by the rules of the challenge's ``CVPR25_text_eval.py``.

    Both maps are cast to uint8 as the script does (ids above 255 wrap). For every prompted class id: Dice and NSD of
    ``gt == id`` vs ``seg == id``; a class absent from both is NaN, one absent from the ground truth but predicted
    scores 0. The case's score is the mean over the classes that are not NaN (NaN if all are). ``spacing`` is used as
    given, for the arrays' axes in order (the script passes the npz ``spacing`` straight on). NSD is this module's
    surface-voxel NSD, not the script's surfel areas (docs/decisions.md).
    """
    gt, seg = np.asarray(gt).astype(np.uint8), np.asarray(seg).astype(np.uint8)
    dsc, nsd = [], []
    for c in class_ids:
        g, p = gt == c, seg == c
        if not g.any() and not p.any():
            dsc.append(float("nan")), nsd.append(float("nan"))
        else:
            dsc.append(dice(p, g)), nsd.append(normalized_surface_dice(p, g, spacing, tolerance_mm))
    return _nanmean(dsc), _nanmean(nsd)


def challenge_instance_case(gt: np.ndarray, seg: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Instance F1 of one case by the rules of the challenge's ``CVPR25_text_eval.py``.

    Both maps are cast to uint8; a prediction holding exactly two values (binary) is split into 6-connected
    components (cc3d), which replace its foreground; both maps are then relabelled 1..K and matched with
    :func:`match_instances`. F1 = 2TP / (2TP + FP + FN), 0 without a true positive, also when both are empty.
    """
    gt, seg = np.asarray(gt).astype(np.uint8), np.asarray(seg).astype(np.uint8)
    if len(np.unique(seg)) == 2:
        components = cc3d.connected_components(seg, connectivity=6)
        seg = seg.copy()
        seg[components > 0] = (components[components > 0] + seg.max()).astype(np.uint8)
    gt_ids, seg_ids = relabel_sequential(gt), relabel_sequential(seg)
    n_gt, n_seg = int(gt_ids.max()), int(seg_ids.max())
    if n_seg == 0 or n_gt == 0:
        return 0.0
    overlap, size_p, size_g = _overlaps(seg_ids, gt_ids)
    tp = len(match_instances(overlap / (size_p[:, None] + size_g[None, :] - overlap), iou_threshold)[0])
    return 2 * tp / (2 * tp + (n_seg - tp) + (n_gt - tp)) if tp else 0.0
