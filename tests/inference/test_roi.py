"""The two-stage ROI's network spacing: the memory guard is a floor for dynamic resampling (hand-computed)."""
import pytest

from nnunetv2_medals.inference.roi import stage_two_roi, stage_two_spacing


def test_stage_two_spacing_by_hand():
    roi, image_spacing, identity = (slice(0, 400),) * 3, (1.0,) * 3, (0, 1, 2)
    # 400 mm cube, 100^3 patches at 1 mm: the guard asks for 400 / (1.9 * 100) = 2.105 mm; a dynamic 0.5 mm (or the
    # plans' 1 mm) cannot go below it, a coarser dynamic 3 mm stays
    assert stage_two_spacing(roi, image_spacing, (100,) * 3, (1,) * 3, identity, (0.5,) * 3) == (
        pytest.approx([400 / 190] * 3), True)
    assert stage_two_spacing(roi, image_spacing, (100,) * 3, (1,) * 3, identity) == (pytest.approx([400 / 190] * 3),
                                                                                     True)
    assert stage_two_spacing(roi, image_spacing, (100,) * 3, (1,) * 3, identity, (3.0, 0.5, 0.5)) == (
        pytest.approx([3.0, 400 / 190, 400 / 190]), True)
    # 150 mm cube fits at the plans' 1 mm (3.4e6 < 1.8^3 * 1e6 voxels) but not at a dynamic 0.5 mm (27e6): the
    # guard then coarsens to 150 / 190 = 0.789 mm
    small = (slice(0, 150),) * 3
    assert stage_two_spacing(small, image_spacing, (100,) * 3, (1,) * 3, identity) == ([1.0] * 3, False)
    assert stage_two_spacing(small, image_spacing, (100,) * 3, (1,) * 3, identity, (0.5,) * 3) == (
        pytest.approx([150 / 190] * 3), True)
    # a 0.9 mm dynamic spacing keeps it under the trigger: 166^3 = 4.6e6 voxels
    assert stage_two_spacing(small, image_spacing, (100,) * 3, (1,) * 3, identity, (0.9,) * 3) == ([0.9] * 3, False)


def test_stage_two_roi_spans_the_foreground_box_scaled_and_at_least_the_minimum():
    label_map = __import__("numpy").zeros((40, 40, 40), "uint16")
    label_map[18:22, 18:22, 18:22] = 3
    # 1 mm image, fine patch 8 voxels at 1 mm, 1.5 patches minimum -> 12 voxels; the 4-voxel box x 1.25 = 5 voxels
    roi = stage_two_roi(label_map, (1.0,) * 3, (8,) * 3, (1.0,) * 3, (0, 1, 2), 1.25, 1.5)
    assert all(sl.stop - sl.start == 12 for sl in roi)
    assert all(sl.start <= 18 and sl.stop >= 22 for sl in roi)
    assert stage_two_roi(label_map * 0, (1.0,) * 3, (8,) * 3, (1.0,) * 3, (0, 1, 2)) is None
