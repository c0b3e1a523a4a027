"""Dynamic resampling, the memory guard and the two-stage ROI on hand-computed cases."""
import numpy as np
import pytest

from nnunetv2_medals.resampling import dynamic_spacing, memory_guard, roi_from_mask


def test_small_structure_in_a_fine_image_is_zoomed_in_down_to_the_image_spacing():
    # zoom spacing 16 mm / (0.5 * 64) = 0.5 mm, but the image has 1 mm voxels: no finer than that
    assert dynamic_spacing((1, 1, 1), (2, 2, 2), (64, 64, 64), (16, 16, 16)) == (1.0, 1.0, 1.0)
    # an image at 0.25 mm: the zoom is bounded to t / max_zoom = 1 mm unless max_zoom allows 0.5 mm
    assert dynamic_spacing((0.25,) * 3, (2,) * 3, (64,) * 3, (16,) * 3) == (1.0, 1.0, 1.0)
    assert dynamic_spacing((0.25,) * 3, (2,) * 3, (64,) * 3, (16,) * 3, max_zoom=8) == (0.5, 0.5, 0.5)


def test_each_axis_follows_its_own_branch():
    # z: coarse image (3 > 2), structure 40 mm -> zoom 40 / 16 = 2.5 > 2 -> zoomed out to 2.5
    # y: fine image (0.5 <= 1), structure 20 mm -> zoom 20 / 32 = 0.625 < 1 -> 0.625 (above the 0.5 image spacing)
    # x: fine image, structure 80 mm -> zoom 2.5 > 1 -> min(1, 2.5) = 1
    assert dynamic_spacing((3, 0.5, 0.5), (2, 1, 1), (32, 64, 64), (40, 20, 80)) == pytest.approx((2.5, 0.625, 1.0))


def test_a_coarse_image_is_never_upsampled_beyond_the_model_spacing_and_big_structures_stay_bounded():
    # tiny structure in a coarse image: max(t, zoom) = t
    assert dynamic_spacing((5, 5, 5), (1, 1, 1), (64, 64, 64), (4, 4, 4)) == (1.0, 1.0, 1.0)
    # huge structure: zoom 400 / 32 = 12.5 mm, clamped to t * max_zoom = 2
    assert dynamic_spacing((2, 2, 2), (1, 1, 1), (64, 64, 64), (400, 400, 400)) == (2.0, 2.0, 2.0)
    # alpha: the fraction of the patch the structure should fill
    assert dynamic_spacing((3,), (1,), (64,), (96,), alpha=1.0) == (1.5,)
    with pytest.raises(ValueError):
        dynamic_spacing((1,), (1,), (64,), (10,), alpha=0)


def test_a_floor_bounds_the_dynamic_spacing_from_below():
    # zoom 16 / 32 = 0.5 mm on a 0.25 mm image, bounded to t / 2 = 1 mm; a floor of (2.105, 0.5, 3) lifts it per axis
    # (the memory guard's spacing: the dynamic rule never undoes it), even above t * max_zoom
    assert dynamic_spacing((0.25,) * 3, (2,) * 3, (64,) * 3, (16,) * 3, floor=(2.105, 0.5, 5.0)) == pytest.approx(
        (2.105, 1.0, 5.0))


def test_memory_guard_triggers_only_on_an_oversized_roi():
    # 400 mm cube at 1 mm with 100^3 patches: 64e6 voxels > 1.8^3 * 1e6 -> 400 / (1.9 * 100) = 2.105 mm
    spacing, triggered = memory_guard((1, 1, 1), (400, 400, 400), (100, 100, 100))
    assert triggered and spacing == pytest.approx((400 / 190,) * 3)
    # 150 mm cube: 3.4e6 voxels < 5.8e6 -> unchanged
    assert memory_guard((1, 1, 1), (150, 150, 150), (100, 100, 100)) == ((1.0, 1.0, 1.0), False)
    # only the axes beyond 1.9 patches are coarsened
    spacing, triggered = memory_guard((1, 1, 1), (600, 150, 150), (100, 100, 100))
    assert triggered and spacing == pytest.approx((600 / 190, 1.0, 1.0))


def test_roi_scales_the_foreground_box_keeps_a_minimum_and_stays_inside():
    mask = np.zeros((40, 60, 80), bool)
    mask[10:20, 20:30, 30:50] = True                       # box sizes 10, 10, 20, centres 15, 25, 40
    assert roi_from_mask(mask, scale=1.5) == (slice(8, 23), slice(18, 33), slice(25, 55))
    # half a fine patch of 32 voxels on z: 16 voxels at least
    assert roi_from_mask(mask, scale=1.0, min_size=(16, 0, 0))[0] == slice(7, 23)
    # near the border the box shifts inwards instead of being cut
    edge = np.zeros((40, 60, 80), bool)
    edge[0:4, 0:4, 76:80] = True
    assert roi_from_mask(edge, scale=1.0, min_size=(10, 10, 10)) == (slice(0, 10), slice(0, 10), slice(70, 80))
    # larger than the image: clipped to it
    assert roi_from_mask(edge, scale=1.0, min_size=(100, 1, 1))[0] == slice(0, 40)


def test_empty_stage_one_gives_no_roi():
    assert roi_from_mask(np.zeros((8, 8, 8), bool)) is None
