"""Reading one case from files: its image channels and mask prompts, with nnU-Net's reader of the model's plans.

Every file is checked before nnU-Net's reader sees it (:func:`checked_image_header`), because that reader hides
damage: SimpleITK reads a truncated ``.nii.gz`` with the missing voxels zero-filled and its NIfTI reader turns NaN
and infinite voxels into 0. So a gzip stream must decompress to its end, a 3D model gets 3D images, the number of
channel files is the model's, non-finite voxels (looked for in the raw data, with nibabel for NIfTI) are refused,
and a mask prompt must have its image's grid (size, spacing, origin, direction, compared as stored, before any
reorientation). Each problem is one :class:`MedalSInputError` naming the file.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import plans_reader_writer
from nnunetv2_medals.text_prompts.prompt_file import Prompt


#: mask prompt vs image: relative spacing tolerance, origin tolerance (fraction of the smallest spacing), direction
#: cosine tolerance (NIfTI stores its geometry in float32)
SPACING_RTOL, ORIGIN_TOL_VOXELS, DIRECTION_ATOL = 1e-3, 1e-2, 1e-3
_GZIP_CHUNK = 1 << 24


def check_gzip_stream(path: Path, field: str = "image") -> None:
    """A ``.gz`` file must decompress to its end-of-stream marker (SimpleITK zero-fills a truncated one)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(_GZIP_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as e:
        raise MedalSInputError(path, field, f"is damaged or truncated (its gzip stream does not decompress to the "
                                            f"end: {e}); copy the file again") from None


def _check_finite(path: Path, header: sitk.ImageFileReader, field: str) -> None:
    """Refuse non-finite voxels, looked for in the raw data: nibabel for NIfTI (SimpleITK's NIfTI reader already
    turns them into 0), SimpleITK for other formats. Integer voxels cannot be non-finite."""
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel

        nifti = nibabel.load(str(path))
        if nifti.header.get_data_dtype().kind not in "fc":
            return
        data = np.asanyarray(nifti.dataobj)
    else:
        if "float" not in sitk.GetPixelIDValueAsString(header.GetPixelID()):
            return
        data = sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise MedalSInputError(path, field, f"holds {bad} NaN or infinite voxels; non-finite images are refused "
                                            f"(replace them, e.g. with the image's minimum, and predict again)")


def checked_image_header(path: str | Path, field: str = "image", finite: bool = True) -> sitk.ImageFileReader:
    """Check one input file before nnU-Net's reader reads it (see the module docstring) and return its header
    (a SimpleITK reader after ``ReadImageInformation``: size, spacing, origin, direction as stored)."""
    path = Path(path)
    if not path.is_file():
        raise MedalSInputError(path, field, "file not found")
    if path.name.endswith(".gz"):
        check_gzip_stream(path, field)
    header = sitk.ImageFileReader()
    header.SetFileName(str(path))
    try:
        header.ReadImageInformation()
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip().startswith("ImageFileReader")),
                     "no reader for this file")
        raise MedalSInputError(path, field, f"cannot be read as an image ({first})") from None
    if header.GetDimension() != 3:
        size = " x ".join(map(str, header.GetSize()))
        raise MedalSInputError(path, field, f"is a {header.GetDimension()}D image (size {size}); this model segments "
                                            f"3D images only")
    if finite:
        _check_finite(path, header, field)
    return header


def _same_grid(mask: sitk.ImageFileReader, image: sitk.ImageFileReader) -> str | None:
    """What differs between a mask's and its image's stored grid, or None."""
    if mask.GetSize() != image.GetSize():
        return f"shape {mask.GetSize()} (x, y, z) does not match the image's {image.GetSize()}"
    if not np.allclose(mask.GetSpacing(), image.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        return f"spacing {mask.GetSpacing()} does not match the image's {image.GetSpacing()}"
    if not np.allclose(mask.GetOrigin(), image.GetOrigin(), rtol=0,
                       atol=ORIGIN_TOL_VOXELS * min(image.GetSpacing())):
        return f"origin {mask.GetOrigin()} does not match the image's {image.GetOrigin()}"
    if not np.allclose(mask.GetDirection(), image.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        return f"direction {mask.GetDirection()} does not match the image's {image.GetDirection()}"
    return None


def _check_channels(predictor, image_files: Sequence[str]) -> None:
    """As many channel files as the model was trained with (``CASE_0000``, ``CASE_0001``, …)."""
    expected = len(predictor.dataset_json.get("channel_names") or predictor.dataset_json.get("modality") or {})
    if expected and len(image_files) != expected:
        ending = predictor.dataset_json.get("file_ending", "")
        names = [Path(f).name[:-len(ending)] if ending and Path(f).name.endswith(ending) else Path(f).name
                 for f in image_files]
        case = names[0][:-5] if names and len(names[0]) > 5 else names[0]
        wanted = ", ".join(f"_{i:04d}" for i in range(expected))
        raise MedalSInputError(image_files[0], "channels", f"the model expects {expected} channel"
                                                           f"{'s' if expected > 1 else ''} ({wanted}); {case} has "
                                                           f"{len(image_files)} ({', '.join(names)})")


def read_image(predictor, image_files: Sequence[str]) -> tuple[np.ndarray, dict]:
    """An image (C, *S) and its reader properties, with nnU-Net's reader of ``predictor``'s plans, after the checks
    of :func:`checked_image_header` on every channel file."""
    _check_channels(predictor, image_files)
    for f in image_files:
        checked_image_header(f)
    rw = plans_reader_writer(predictor.plans_manager)
    return rw.read_images(list(image_files))


def read_case(predictor, image_files: Sequence[str], prompts: Sequence[Prompt]
              ) -> tuple[np.ndarray, dict, list[np.ndarray | None]]:
    """An image (C, *S), its reader properties and one native-geometry mask prompt (*S bool, or None) per prompt.

    Missing, damaged, 2D and non-finite files, a wrong number of channels and mask prompts on another grid than the
    image's are one clear error each (module docstring).
    """
    rw = plans_reader_writer(predictor.plans_manager)
    _check_channels(predictor, image_files)
    headers = [checked_image_header(f) for f in image_files]
    for i, p in enumerate(prompts):
        if p.mask is not None:
            differs = _same_grid(checked_image_header(p.mask, f"prompts[{i}].mask", finite=False), headers[0])
            if differs:
                raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"{differs}; a mask prompt must be on its "
                                                                    f"image's grid ({image_files[0]})")
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
