"""Challenge metrics against values computed by hand (the evaluate command: test_evaluation.py)."""
import math

import numpy as np
import pytest

from nnunetv2_medals.metrics import (challenge_instance_case, challenge_semantic_case, dice, instance_f1,
                                     normalized_surface_dice, surface_voxels)
from tests.helpers import box, instance_scene, line_scene, slabs


def test_dice_of_two_offset_cubes():
    a = box((20, 20, 20), slice(0, 10), slice(0, 10), slice(0, 10))
    b = box((20, 20, 20), slice(0, 10), slice(0, 10), slice(5, 15))  # overlap 10*10*5 = 500 of 1000 + 1000
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_surface_voxels_of_a_slab():
    _, gt = slabs()
    # faces z=0 and z=3 (36 each) plus the in-plane ring of z=1,2 (20 each); the volume border counts as outside
    assert surface_voxels(gt).sum() == 112


def test_nsd_uses_spacing_in_array_axis_order():
    pred, gt = slabs()
    # spacing (3, 1, 1): pred's extra face z=4 (36 voxels) lies 3 mm from gt's face z=3 > 2 mm, every other pred
    # surface voxel (132 in all) touches gt's surface. Of gt's 112 surface voxels, all are within 2 mm of pred's
    # surface: the face z=3 meets pred's ring at z=3 at most 2 in-plane voxels (2 mm) away.
    expected = (132 - 36 + 112) / (132 + 112)
    assert normalized_surface_dice(pred, gt, (3.0, 1.0, 1.0)) == pytest.approx(expected)
    # the same arrays at 1 mm: the extra face is 1 mm away -> everything within tolerance
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # 3 mm along an in-plane axis instead: the z gap is 1 mm again, so NSD is 1 - the spacing order matters
    assert normalized_surface_dice(pred, gt, (1.0, 3.0, 1.0)) == pytest.approx(1.0)
    # a wider tolerance admits the 3 mm face
    assert normalized_surface_dice(pred, gt, (3.0, 1.0, 1.0), tolerance_mm=3.0) == pytest.approx(1.0)


def test_nsd_empty_cases():
    pred, gt = slabs()
    empty = np.zeros_like(gt)
    assert normalized_surface_dice(empty, gt, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(pred, empty, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(empty, empty, (1, 1, 1)) == 1.0
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(pred, gt, (1, 1))


def test_instance_f1_with_split_and_merged_components():
    pred, gt = instance_scene()
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (2, 3, 3)
    assert scores.f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 3))
    assert scores.dsc_tp == pytest.approx((1.0 + 192 / 224) / 2)


def test_instance_f1_components_are_6_connected():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1, 1, 1], gt[2, 2, 2] = 1, 2    # diagonal neighbours: two instances
    pred = gt > 0                       # one binary mask; 6-connectivity keeps them apart
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0) and scores.f1 == 1.0


def test_instance_f1_empty_cases():
    pred, gt = instance_scene()
    none = instance_f1(np.zeros_like(pred), gt)
    assert none.f1 == 0.0 and none.fn == 5 and none.dsc_tp == 0.0
    assert instance_f1(pred, np.zeros_like(gt)).f1 == 0.0
    assert instance_f1(np.zeros_like(pred), np.zeros_like(gt)).f1 == 1.0


def test_instance_matching_counts_true_positives_before_iou():
    # max-sum IoU pairs A-P2 + B-P1 (1/7 + 3/8 = 0.518 > 0.5 + 0): no pair reaches 0.5, TP 0. The challenge's cost
    # -[IoU >= 0.5] - IoU/(2n), n = min(2, 2) = 2: A-P1 + B-P2 costs -1.125, A-P2 + B-P1 -0.130 -> TP 1 (A-P1)
    pred, gt = line_scene()
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 1)
    assert scores.f1 == pytest.approx(0.5)
    assert scores.dsc_tp == pytest.approx(2 * 5 / (7 + 8))
    assert challenge_instance_case(gt, pred.astype(np.uint8)) == pytest.approx(0.5)


def test_dsc_tp_is_zero_without_a_true_positive():
    gt = np.zeros((1, 1, 10), np.uint8)
    gt[..., 0:4] = 1                                   # 4 voxels
    pred = np.zeros_like(gt, bool)
    pred[..., 3:8] = True                              # IoU 1/8 < 0.5: one FP, one FN
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.f1, scores.dsc_tp) == (0, 0.0, 0.0)


def test_challenge_semantic_case_averages_every_prompted_class():
    pred_1, gt_1 = slabs()                             # class 1: the slabs at (3, 1, 1) mm
    gt = gt_1.astype(np.uint8)
    pred = pred_1.astype(np.uint8)
    gt[8:10, 0:2, 0:2] = 2                             # class 2: missed -> 0
    pred[8:10, 4:6, 4:6] = 3                           # class 3: absent from the ground truth, predicted -> 0
    nsd_1 = (132 - 36 + 112) / (132 + 112)             # class 4: absent from both -> NaN, skipped
    dsc, nsd = challenge_semantic_case(gt, pred, [1, 2, 3, 4], (3.0, 1.0, 1.0))
    assert dsc == pytest.approx((2 * 144 / (180 + 144) + 0 + 0) / 3)
    assert nsd == pytest.approx((nsd_1 + 0 + 0) / 3)
    assert all(math.isnan(v) for v in challenge_semantic_case(gt, pred, [4], (3.0, 1.0, 1.0)))


def test_challenge_instance_case_rules():
    pred, gt = instance_scene()
    assert challenge_instance_case(gt, pred.astype(np.uint8)) == pytest.approx(0.4)   # binary: split with cc3d
    empty = np.zeros_like(gt)
    assert challenge_instance_case(empty, empty) == 0.0                               # the script: 0, not 1
    assert challenge_instance_case(gt, empty) == 0.0 and challenge_instance_case(empty, pred) == 0.0
    # the script casts both maps to uint8: ground-truth ids 1 and 257 become one instance of 128 voxels, which
    # each predicted 64-voxel cube overlaps with IoU 0.5 -> TP 1, FP 1, FN 0 -> F1 2/3 (ours: 1)
    gt = np.zeros((4, 4, 12), np.uint16)
    gt[..., 0:4], gt[..., 8:12] = 1, 257
    assert challenge_instance_case(gt, (gt > 0).astype(np.uint8)) == pytest.approx(2 / 3)
    assert instance_f1(gt > 0, gt).f1 == 1.0
