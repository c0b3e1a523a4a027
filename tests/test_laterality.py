"""The side guard's parts on arrays: the midline, the cut learnt from training extents, cutting a prompt's
probabilities at it (:mod:`nnunetv2_medals.laterality`). The real-CT midline is checked in
tests/datasets/test_totalseg_ct.py, the guard inside prediction in tests/inference/test_side_guard.py."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunetv2_medals.laterality import (MIDLINE_KEY, Midline, SideRule, find_midline, guard_case, guard_sides,
                                        side_extents_mm, side_rule, widest_side_extents)


def torso(shape=(20, 60, 120), centre_x=70.0, rng=None):
    """A mirror-symmetric body (an ellipse with a bright spine and two dark kidneys) whose midline is ``centre_x``,
    on an air background, plus a little noise: (z, y, x) with x towards the patient's right."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    body = ((x - centre_x) / 40) ** 2 + ((y - 30) / 22) ** 2 <= 1
    image = np.where(body, 40.0, -1000.0)
    image[(np.abs(x - centre_x) < 4) & (np.abs(y - 42) < 5)] = 700.0                 # spine
    image[((np.abs(x - centre_x) - 20) ** 2 / 36 + (y - 36) ** 2 / 64) <= 1] = 150.0  # kidneys
    rng = rng or np.random.default_rng(0)
    return (image + rng.normal(0, 5, shape)).astype(np.float32)


@pytest.mark.parametrize("centre", [48.0, 60.0, 70.5, 75.0])
def test_the_midline_is_the_mirror_axis_wherever_the_body_lies(centre):
    found = find_midline(torso(centre_x=centre), (2.0, 2.0, 2.0))
    assert found.trusted and abs(found.index - centre) <= 1.0, found
    # the same scan stored with x reversed: the same plane, counted from the other end
    flipped = find_midline(torso(centre_x=centre)[:, :, ::-1], (2.0, 2.0, 2.0))
    assert abs(flipped.index - (119 - centre)) <= 1.0, flipped


def test_the_midline_works_on_any_axis_and_sampling():
    image = np.moveaxis(torso(centre_x=66.0), 2, 0)        # left-right first, 0.8 mm voxels: sampled every 5th
    found = find_midline(image, (0.8, 2.0, 2.0), lr_axis=0)
    assert abs(found.index - 66.0) <= 2.5


def test_a_scan_of_one_side_has_no_trusted_midline():
    image = torso(centre_x=70.0)
    for crop in (image[:, :, :75], image[:, :, 60:]):      # cut near the midline: the rest mirrors itself somewhere
        found = find_midline(crop, (2.0, 2.0, 2.0))
        assert not found.trusted and found.imbalance > 0.25 and "one side only" in found.why_not(), found
    assert find_midline(image, (2.0, 2.0, 2.0)).imbalance < 0.05


def test_noise_has_no_trusted_midline():
    found = find_midline(np.random.default_rng(1).normal(size=(16, 40, 80)).astype(np.float32), (2.0, 2.0, 2.0))
    assert not found.trusted and found.symmetry < 0.5
    assert not find_midline(np.zeros((8, 8, 8), np.float32), (1, 1, 1)).trusted   # a constant image
    assert not find_midline(np.zeros((0, 8, 8), np.float32), (1, 1, 1)).trusted   # an empty one


def test_the_cut_follows_how_far_the_target_reached_in_training():
    rule = side_rule("left kidney", [-100.0, -30.0])           # never near the midline: cut 5 mm across it
    assert rule.sign == -1 and rule.cut_mm == -5.0
    assert side_rule("kidney (right)", [30.0, 90.0]) == SideRule("kidney (right)", 1, -5.0)
    # a left vein that reached 12 mm right of the midline in training is cut only 17 mm across
    assert side_rule("left brachiocephalic vein", [-60.0, 12.0]).cut_mm == -17.0
    assert side_rule("right ventricle", [-70.0, 30.0]).cut_mm == -75.0
    assert side_rule("both kidneys", [-100.0, 100.0]) is None and side_rule("liver", [-20.0, 120.0]) is None
    assert side_rule("left kidney", None) is None and side_rule(None, [-60.0, -50.0]) is None


def test_only_what_lies_beyond_the_cut_is_removed():
    probs = torch.zeros(3, 8, 10, 40)          # grid x: 2 mm voxels, midline at 20, + = right
    probs[0, 2:5, 2:6, 5:9] = 0.9               # left structure on the left
    probs[0, 2:5, 2:6, 30:34] = 0.8             # ... and the same drawn on the right: x 20-26 mm
    probs[0, 2:5, 2:6, 20:23] = 0.7             # ... and a rim 0-4 mm across the midline: within the 5 mm
    probs[1] = probs[0]                         # an unguarded prompt
    probs[2, 2:5, 2:6, 30:34] = 0.3             # below 0.5: nothing to count, but cut too
    before = probs.clone()
    rule = side_rule("left kidney", [-40.0, -12.0])
    removed = guard_sides(probs, [rule, None, rule], lr_axis=2, midline_index=20.0, spacing_mm=2.0)
    assert removed == [48, None, 0]
    assert probs[0, ..., 23:].sum() == 0 and probs[2].sum() == 0
    assert torch.equal(probs[0, ..., :23], before[0, ..., :23])
    assert torch.equal(probs[1], before[1])


def test_guard_case_maps_the_midline_onto_the_grid_and_needs_a_side():
    # canonical image x 0..99 cropped to 10..90 (80 voxels of 1 mm), resampled to a 40-voxel grid: midline x = 50
    # is grid voxel (50 - 10 + 0.5) / 2 - 0.5 = 19.75
    properties = {MIDLINE_KEY: Midline(50.0, 0.9, 0.0).to_json(), "spacing": [3.0, 1.0, 1.0],
                  "bbox_used_for_cropping": [[0, 6], [0, 10], [10, 90]],
                  "shape_after_cropping_and_before_resampling": [6, 10, 80]}
    recorded = {"left kidney": [-40.0, -30.0], "both kidneys": [-40.0, 40.0]}
    sides = ["left", None, "left", None]     # as the matcher reads "the kidney on the left side", "kidney", ...
    targets = ["left kidney", "left kidney", None, "both kidneys"]
    probs = torch.zeros(4, 6, 10, 40)
    probs[:, 1:4, 2:6, 2:6] = 0.9     # grid x 2..5: 28-35 mm left of the midline
    probs[:, 1:4, 2:6, 22:26] = 0.9   # grid x 22..25: 4.5-10.5 mm right of it; the cut is 5 mm across
    info = guard_case(probs, properties, sides, targets, recorded, transpose_forward=[0, 1, 2])
    assert info == [{"side_guard": {"removed_voxels": 36}}, {}, {}, {}]
    assert probs[0, ..., 23:].sum() == 0 and probs[0, ..., 22].sum() > 0 and probs[0, ..., :20].sum() > 0
    assert probs[1:, ..., 23:].sum() > 0                   # "kidney" means both; no target; a two-sided region
    # transposed plans: the canonical left-right axis is the grid's first
    transposed = {**properties, "bbox_used_for_cropping": [[10, 90], [0, 6], [0, 10]],
                  "shape_after_cropping_and_before_resampling": [80, 6, 10]}
    probs = torch.zeros(1, 40, 6, 10)
    probs[0, 22:26, 1:4, 2:6] = 0.9
    assert guard_case(probs, transposed, sides[:1], targets[:1], recorded, [2, 0, 1]) == [
        {"side_guard": {"removed_voxels": 36}}]
    # no trusted midline: the guard says it is off and removes nothing
    probs = torch.full((1, 6, 10, 40), 0.9)
    for midline, reason in ((Midline(50.0, 0.2, 0.0), "symmetr"), (Midline(50.0, 0.9, 0.45), "one side only")):
        info = guard_case(probs, {**properties, MIDLINE_KEY: midline.to_json()}, sides[:1], targets[:1], recorded,
                          [0, 1, 2])
        assert info[0]["side_guard"].startswith("off") and reason in info[0]["side_guard"] and (probs == 0.9).all()


def test_the_grid_midline_uses_voxel_centres():
    # 80 cropped voxels of 1 mm onto a 20-voxel grid (4 mm): canonical x = 50 with the crop starting at 10 is grid
    # voxel (40 + 0.5) / 4 - 0.5 = 9.625 (9.625 + 5 mm / 4 mm = 10.875: voxel 11 is cut; without the half-voxel
    # shift the midline would be 10 and voxel 11 kept)
    properties = {MIDLINE_KEY: Midline(50.0, 0.9, 0.0).to_json(), "spacing": [3.0, 1.0, 1.0],
                  "bbox_used_for_cropping": [[0, 6], [0, 10], [10, 90]],
                  "shape_after_cropping_and_before_resampling": [6, 10, 80]}
    probs = torch.full((1, 6, 10, 20), 0.9)
    guard_case(probs, properties, ["left"], ["left kidney"], {"left kidney": [-40.0, -30.0]}, [0, 1, 2])
    assert probs[0, ..., 10].min() == 0.9 and probs[0, ..., 11:].max() == 0


def test_training_offsets_are_measured_from_each_cases_midline():
    targets = [SimpleNamespace(name=n, label_values=v, instance=False)
               for n, v in (("left kidney", [1]), ("right kidney", [2]), ("both kidneys", [1, 2]))]
    cases = []
    for centre in (50.0, 70.0):
        image = torso(centre_x=centre)
        seg = np.full(image.shape, -1, np.int16)                      # nnU-Net's "outside the nonzero region"
        seg[:, 5:55] = 0
        seg[5:15, 30:40, int(centre) - 24:int(centre) - 16] = 1      # left: 20 mm (x 2 mm) left of the midline
        seg[5:15, 30:40, int(centre) + 16:int(centre) + 24] = 2
        cases.append(side_extents_mm(image, seg, targets, lr_axis=2, spacing=(2.0, 2.0, 2.0)))
    found = widest_side_extents(cases)
    assert set(found) == {"left kidney", "right kidney"}
    # voxels 24..17 left of the midline at 2 mm, either case: [-48, -34] mm (the midline is found within 1 voxel)
    assert -50 <= found["left kidney"][0] <= -46 and -36 <= found["left kidney"][1] <= -32
    assert 30 <= found["right kidney"][0] <= 34 and 44 <= found["right kidney"][1] <= 48
