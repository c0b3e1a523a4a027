"""Geometry conventions: one canonical orientation for every image we read, and the challenge npz spacing order.

**Canonical orientation.** nnU-Net's default readers keep the voxel order as stored, so a model learns "left" as an
array side and the same scan stored in another voxel order (RAS vs LPS vs permuted axes) is answered on the wrong
side. Every SimpleITK-readable 3D image (NIfTI, NRRD, MHA, …) is therefore read through nnU-Net's own
``SimpleITKIOWithReorient``: the volume is permuted/flipped (never resampled) to the closest RAS orientation, so
array axes are (S, A, R) increasing, whatever the file's voxel order; segmentations are written back in the input's
own voxel order, direction, origin and spacing. nnU-Net resolves readers by name inside ``nnunetv2.imageio`` only,
which is why we use that class by name in the plans (stock ``nnUNetv2_predict`` then reorients too) instead of a
class of ours; :class:`MedalSImageIO` adds, for our own writers only, what the stock class lacks (label values
above 255: it always casts to uint8).

**Challenge npz spacing.** BiomedSegFM npz files store ``imgs`` as (D, H, W) arrays — SimpleITK's array order —
and ``spacing`` as ``sitk.Image.GetSpacing()``, i.e. (x, y, z) = (W, H, D) order: the challenge baseline does
``sitk.GetImageFromArray(imgs)`` then ``SetSpacing(spacing)``. :func:`npz_spacing_to_array_order` is the one place
that convention is applied; :func:`npz_image` builds the same image, so ``predict-npz`` reorients an npz exactly
as the training data made by ``convert-biomedsegfm`` (NIfTI files of those images) was reoriented.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIOWithReorient

#: the reader/writer our planners record in the plans (resolvable by name inside nnunetv2.imageio)
CANONICAL_READER = "SimpleITKIOWithReorient"
#: readers whose arrays are already in a canonical orientation
REORIENTING_READERS = frozenset({"SimpleITKIOWithReorient", "NibabelIOWithReorient"})
#: nnU-Net's reader -> the reorienting reader our planners record instead (a dataset nnU-Net reads with nibabel,
#: e.g. a NIfTI whose sform SimpleITK rejects, keeps nibabel: its reorienting twin gives the same canonical arrays)
_CANONICAL_FOR = {"SimpleITKIO": CANONICAL_READER, "NibabelIO": "NibabelIOWithReorient"}


def canonical_reader_name(default_reader_name: str) -> str:
    """The reader our planners record: a reorienting one wherever nnU-Net would read a 3D medical format, else
    nnU-Net's own choice (2D natural images, TIFF)."""
    return _CANONICAL_FOR.get(default_reader_name, default_reader_name)


class MedalSImageIO(SimpleITKIOWithReorient):
    """``SimpleITKIOWithReorient`` whose writer keeps label values above 255 (instance maps)."""

    def write_seg(self, seg: np.ndarray, output_fname: str, properties: dict) -> None:
        assert seg.ndim == 3, "segmentation must be 3d"
        sitk.WriteImage(stored_order_image(seg, properties), output_fname, True)


def canonical_image(image: sitk.Image) -> tuple[np.ndarray, dict]:
    """A SimpleITK image in the canonical orientation: array (1, *S) and reader-style properties (as
    ``SimpleITKIOWithReorient.read_images`` gives them), for images that do not come from a file."""
    original = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())
    oriented = sitk.DICOMOrient(image, "RAS")
    props = {"sitk_stuff": {"spacing": oriented.GetSpacing(), "origin": oriented.GetOrigin(),
                            "direction": oriented.GetDirection(), "original_orientation": original},
             "spacing": [abs(float(s)) for s in oriented.GetSpacing()[::-1]]}
    return sitk.GetArrayFromImage(oriented)[None].astype(np.float32), props


def stored_order_image(seg: np.ndarray, properties: dict) -> sitk.Image:
    """A canonical-orientation label map (*S) as a SimpleITK image in the input's own voxel order and geometry."""
    stuff = properties["sitk_stuff"]
    dtype = np.uint8 if seg.size == 0 or int(seg.max()) < 255 else np.uint16
    image = sitk.GetImageFromArray(np.ascontiguousarray(seg).astype(dtype, copy=False))
    image.SetSpacing(stuff["spacing"])
    image.SetOrigin(stuff["origin"])
    image.SetDirection(stuff["direction"])
    return sitk.DICOMOrient(image, stuff["original_orientation"])


def npz_image(imgs: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    """A challenge npz image as the challenge's converter makes it: ``GetImageFromArray(imgs)`` then
    ``SetSpacing(spacing)`` (identity direction, i.e. the arrays are taken as LPS voxel order)."""
    image = sitk.GetImageFromArray(np.asarray(imgs, np.float32))
    image.SetSpacing([float(s) for s in spacing])
    return image


def reader_writer_for(reader_name: str):
    """An instance of the reader/writer a model's plans name; ours where the plans name the canonical one."""
    if reader_name == CANONICAL_READER:
        return MedalSImageIO()
    return recursive_find_reader_writer_by_name(reader_name)()


def plans_reader_writer(plans_manager):
    """The reader/writer of a model's plans (:func:`reader_writer_for` its recorded name)."""
    return reader_writer_for(plans_manager.plans["image_reader_writer"])


def is_canonical(reader_name: str) -> bool:
    return reader_name in REORIENTING_READERS


def npz_spacing_to_array_order(spacing: Sequence[float]) -> list[float]:
    """Challenge npz ``spacing`` (x, y, z, SimpleITK order) -> per array axis of ``imgs`` (D, H, W)."""
    values = [float(s) for s in spacing]
    if len(values) != 3:
        raise ValueError(f"spacing needs three values, got {values}")
    return values[::-1]


def array_spacing_to_npz_order(spacing: Sequence[float]) -> list[float]:
    """Per array axis (D, H, W) -> the npz's SimpleITK (x, y, z) order (the inverse of the above)."""
    return [float(s) for s in spacing][::-1]
