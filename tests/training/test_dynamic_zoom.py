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
