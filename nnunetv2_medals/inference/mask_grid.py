"""Native-geometry mask prompts onto the network grid of their preprocessed image (hybrid mode)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask


def mask_to_network_grid(mask: np.ndarray, properties: dict, nonzero: np.ndarray, grid_shape: Sequence[int],
                         plans_manager, configuration_manager) -> np.ndarray:
    """A native-geometry mask prompt (*S) -> float32 (0/1) on the preprocessed image's grid, as nnU-Net's
    preprocessing of the image with the mask as its segmentation gives it: the same transpose and crop (voxels
    outside the image's nonzero region marked -1, as ``crop_to_nonzero`` does), the plans' segmentation
    resampling to the same shape. ``properties``: the image's preprocessing properties; ``nonzero``: its nonzero
    mask, transposed and cropped."""
    seg = mask.astype(np.int8)[None].transpose([0, *[i + 1 for i in plans_manager.transpose_forward]])
    seg = seg[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))].copy()
    seg[(seg == 0) & ~nonzero[None]] = -1
    original = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    target = list(configuration_manager.spacing)
    if len(target) < len(original):
        target = [original[0], *target]
    seg = configuration_manager.resampling_fn_seg(seg, grid_shape, original, target)
    return (np.asarray(seg[0]) > 0).astype(np.float32)


def mask_prompts_on_grid(image: np.ndarray, masks: Sequence[np.ndarray | None], properties: dict,
                         grid_shape: Sequence[int], plans_manager, configuration_manager) -> torch.Tensor:
    """(N, *grid) float32 spatial prompts: each mask (or zeros for None) on the grid of ``image`` (C, *S) as its
    preprocessing (``properties``) made it, at the configuration's current spacing."""
    prompts = torch.zeros((len(masks), *grid_shape), dtype=torch.float32)
    transposed = image.transpose([0, *[i + 1 for i in plans_manager.transpose_forward]])
    nonzero = create_nonzero_mask(transposed)[bounding_box_to_slice(properties["bbox_used_for_cropping"])]
    for i, m in enumerate(masks):
        if m is not None:
            prompts[i] = torch.from_numpy(mask_to_network_grid(m, properties, nonzero, grid_shape, plans_manager,
                                                               configuration_manager))
    return prompts
