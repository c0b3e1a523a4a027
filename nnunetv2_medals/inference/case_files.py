"""Reading one case from files: its image channels and mask prompts, with nnU-Net's reader of the model's plans."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import plans_reader_writer
from nnunetv2_medals.text_prompts.prompt_file import Prompt


def read_image(predictor, image_files: Sequence[str]) -> tuple[np.ndarray, dict]:
    """An image (C, *S) and its reader properties, with nnU-Net's reader of ``predictor``'s plans."""
    rw = plans_reader_writer(predictor.plans_manager)
    return rw.read_images(list(image_files))


def read_case(predictor, image_files: Sequence[str], prompts: Sequence[Prompt]
              ) -> tuple[np.ndarray, dict, list[np.ndarray | None]]:
    """An image (C, *S), its reader properties and one native-geometry mask prompt (*S bool, or None) per prompt.

    Missing files, non-finite images and mask prompts of another shape or spacing are one clear error each.
    """
    rw = plans_reader_writer(predictor.plans_manager)
    for f in image_files:
        if not Path(f).is_file():
            raise MedalSInputError(f, "image", "file not found")
    image, props = rw.read_images(list(image_files))
    if image.size == 0 or not np.isfinite(image).all():
        raise MedalSInputError(image_files[0], "image", "is empty or contains NaN/infinite values")
    masks = []
    for i, p in enumerate(prompts):
        if p.mask is None:
            masks.append(None)
            continue
        mask, mask_props = rw.read_seg(str(p.mask))
        if mask.shape[1:] != image.shape[1:]:
            raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"shape {mask.shape[1:]} does not match "
                                                                f"the image's {image.shape[1:]}")
        if not np.allclose(mask_props["spacing"], props["spacing"], rtol=1e-3):
            raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"spacing {mask_props['spacing']} does "
                                                                f"not match the image's {props['spacing']}")
        masks.append(mask[0] > 0)
    return image, props, masks
