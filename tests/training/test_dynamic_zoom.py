"""Dynamic resampling in training (paper §2.5): zooming a batch in on its smallest target."""
import numpy as np
import torch

from nnunetv2_medals.datasets.text_prompted import PromptTarget
from nnunetv2_medals.training.dynamic_zoom import zoom_to_smallest_target
from nnunetv2_medals.training.prompt_sampling import TargetLookup


def test_training_zoom_centres_the_smallest_target_and_keeps_image_and_labels_aligned():
    seg = torch.zeros(2, 1, 32, 32, 32)
    seg[:, :, 2:22, 2:22, 2:22] = 3          # a big structure (60 mm at 2 mm voxels)
    seg[:, :, 24:28, 24:28, 24:28] = 6       # a small one, 4 voxels = 8 mm
    data = seg.clone()                       # image = labels, so alignment is visible
    segs = [seg.clone(), seg[:, :, ::2, ::2, ::2].clone()]
    lookup = TargetLookup([PromptTarget("liver", (3,), ("liver",)), PromptTarget("node", (6,), ("node",))])
    presence = lookup.presence(segs[0]).numpy()
    rng = np.random.default_rng(0)
    extents, planned, originals = [(60.0,) * 3, (8.0,) * 3], (2.0,) * 3, [(1.0,) * 3] * 2
    # 8 mm in half of a 32-voxel patch -> 0.5 mm, bounded by the original 1 mm images: a 2x zoom on the node
    n = zoom_to_smallest_target(data, segs, presence, lookup, extents, planned, originals, 0.5, 1.0, rng)
    assert n == 2
    assert (segs[0][0] == 6).sum() == 8 ** 3 and (segs[1][0] == 6).sum() == 4 ** 3
    node = torch.nonzero(segs[0][0, 0] == 6).float().mean(0)
    assert torch.allclose(node, torch.full((3,), 15.5), atol=4.5)     # the node sits near the centre now
    # the image went through the same box: its (trilinear) node is where the label's (nearest) node is
    bright = torch.nonzero(data[0, 0] > 5).float().mean(0)
    assert torch.allclose(bright, node, atol=0.01) and (data[0, 0][segs[0][0, 0] == 6] > 2.5).all()
    untouched = seg.clone()
    segs = [seg.clone()]
    assert zoom_to_smallest_target(untouched, segs, presence, lookup, [None, None], planned, originals, 0.5, 1.0,
                                   rng) == 0
    assert zoom_to_smallest_target(untouched, segs, presence, lookup, extents, planned, originals, 0.5, 0.0, rng) == 0
    # images acquired at the plans' spacing are never zoomed in (no finer detail ever existed)
    assert zoom_to_smallest_target(untouched, segs, presence, lookup, extents, planned, [planned] * 2, 0.5, 1.0,
                                   rng) == 0
    assert torch.equal(untouched, seg)


def test_an_axis_that_would_zoom_out_keeps_zoom_one():
    # original (4, 1, 1) mm, plans (2, 2, 2) mm, a 60 x 8 x 8 mm target, alpha 0.5, 32^3 patch: dynamic spacing
    # z: 4 > 2 -> max(2, 60 / 16 = 3.75) = 3.75 (zoom 2 / 3.75 = 0.53, a zoom-out: kept at 1);
    # y, x: 1 <= 2 -> min(2, 8 / 16 = 0.5), bounded below by the 1 mm image -> 1 mm (zoom 2)
    # -> the crop is 32 x 16 x 16 around the target; the old code clipped z's start to 32 - 60 = -28 and used
    # slices 4..31 stretched to 32
    seg = torch.zeros(1, 1, 32, 32, 32)
    seg[:, :, 2:30, 12:16, 12:16] = 6
    z = torch.arange(32, dtype=torch.float32).view(1, 1, 32, 1, 1)
    data = z.expand(1, 1, 32, 32, 32).clone()             # the image is the z index
    segs = [seg.clone()]
    lookup = TargetLookup([PromptTarget("node", (6,), ("node",))])
    presence = lookup.presence(segs[0]).numpy()
    n = zoom_to_smallest_target(data, segs, presence, lookup, [(60.0, 8.0, 8.0)], (2.0,) * 3, [(4.0, 1.0, 1.0)],
                                0.5, 1.0, np.random.default_rng(0))
    assert n == 1
    assert torch.equal(data[0, 0, :, 5, 5], torch.arange(32, dtype=torch.float32))   # z untouched: slices 0..31
    # y, x zoomed 2x: the 4-voxel-wide target is 8 voxels wide, its z range unchanged
    target = torch.nonzero(segs[0][0, 0] == 6)
    assert target[:, 0].min() == 2 and target[:, 0].max() == 29
    assert (target[:, 1].max() - target[:, 1].min() + 1) == 8 and (target[:, 2].max() - target[:, 2].min() + 1) == 8
