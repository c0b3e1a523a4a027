"""Short field of view in training: a centred slab of the patch, the rest as prediction pads it."""
from types import SimpleNamespace

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunetv2_medals.trainers.medals_trainer import MedalSTrainer
from nnunetv2_medals.training.short_fov import ShortFieldOfViewTransform


def _sample(shape=(32, 48, 40), channels=2):
    image = torch.rand(channels, *shape) + 5  # no zeros before the cut
    seg = torch.randint(1, 4, (1, *shape), dtype=torch.int16)
    return image, seg


def test_a_cut_keeps_one_centred_slab_and_pads_image_and_segmentation_alike():
    np.random.seed(0)
    transform = ShortFieldOfViewTransform(p_per_axis=1.0, min_fraction=0.25)
    for _ in range(20):
        image, seg = _sample()
        out = transform(image=image.clone(), segmentation=seg.clone())
        kept = out["segmentation"] != 0
        assert torch.equal((out["image"] != 0), kept.expand_as(image))  # every channel cut alike
        assert torch.equal(out["image"][kept.expand_as(image)], image[kept.expand_as(image)])
        assert torch.equal(out["segmentation"][kept], seg[kept])
        for axis, length in enumerate(image.shape[1:]):
            others = tuple(d for d in (1, 2, 3) if d != axis + 1)
            inside = kept.any(dim=others)[0].nonzero()[:, 0]
            start, stop = int(inside.min()), int(inside.max()) + 1
            assert len(inside) == stop - start  # one contiguous slab
            assert max(4, int(np.ceil(0.25 * length))) <= stop - start < length
            assert start == (length - (stop - start)) // 2  # where nnU-Net's pad_nd_image puts a short scan


def test_without_probability_nothing_changes():
    image, seg = _sample()
    out = ShortFieldOfViewTransform(p_per_axis=0.0)(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(out["image"], image) and torch.equal(out["segmentation"], seg)


def test_the_trainer_cuts_before_the_deep_supervision_downsampling():
    scales = [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    trainer = SimpleNamespace(short_fov_probability=0.1)
    transforms = MedalSTrainer.get_training_transforms(trainer, (32, 48, 48), (0, 0), scales, None, False).transforms
    kinds = [type(t) for t in transforms]
    assert kinds[-2:] == [ShortFieldOfViewTransform, DownsampleSegForDSTransform]
    assert transforms[-2].p_per_axis == 0.1
    off = MedalSTrainer.get_training_transforms(SimpleNamespace(short_fov_probability=0.0), (32, 48, 48), (0, 0),
                                                scales, None, False).transforms
    assert ShortFieldOfViewTransform not in [type(t) for t in off]
    no_ds = MedalSTrainer.get_training_transforms(trainer, (32, 48, 48), (0, 0), None, None, False).transforms
    assert type(no_ds[-1]) is ShortFieldOfViewTransform
