"""Short field of view in training: a patch that shows only a slab of anatomy, the rest padding, as the sliding window
sees a scan shorter than the patch (our addition to the paper; see docs/decisions.md, "Short field of view").

nnU-Net's prediction pads an image that is smaller than the patch along an axis with zeros (in normalised intensity)
on both sides; training never shows such patches when the training scans are longer than the patch. Measured on the
real-CT job's test copy: cut to a 13-slice slab (39 mm) of its 30 slices, the same model's liver DSC fell from 0.95
to 0.45 and spleen from 0.94 to 0.50.
"""
from __future__ import annotations

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform


class ShortFieldOfViewTransform(BasicTransform):
    """Per sample and axis, with probability ``p_per_axis``: keep a centred slab of the patch along that axis (its
    length uniform on [max(min_length, ⌈min_fraction·L⌉), L − 1] voxels) and set the rest as prediction pads it:
    image 0, segmentation 0 (background; nnU-Net discards predictions in padding, so nothing is taught there but
    "padding is not an organ").

    Runs in nnU-Net's data-augmentation workers on the (C, *S) image and segmentation of one sample, after the
    intensity augmentations and before the deep-supervision downsampling (which then sees the cut segmentation).
    """

    def __init__(self, p_per_axis: float = 0.1, min_fraction: float = 0.25, min_length: int = 4):
        super().__init__()
        self.p_per_axis = p_per_axis
        self.min_fraction = min_fraction
        self.min_length = min_length

    def get_parameters(self, **data_dict) -> dict:
        spatial = data_dict["image"].shape[1:]
        slabs = []
        for axis, length in enumerate(spatial):
            shortest = max(self.min_length, int(np.ceil(self.min_fraction * length)))
            if length - 1 < shortest or np.random.uniform() >= self.p_per_axis:
                continue
            keep = int(np.random.randint(shortest, length))
            start = (length - keep) // 2
            slabs.append((axis, start, start + keep))
        return {"slabs": slabs}

    @staticmethod
    def _cut(x: torch.Tensor, slabs: list, value) -> torch.Tensor:
        for axis, start, stop in slabs:
            x.narrow(axis + 1, 0, start).fill_(value)
            x.narrow(axis + 1, stop, x.shape[axis + 1] - stop).fill_(value)
        return x

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return self._cut(img, params["slabs"], 0)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return self._cut(segmentation, params["slabs"], 0)
