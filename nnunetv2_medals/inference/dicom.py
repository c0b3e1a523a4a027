"""DICOM in and out for ``nnunetv2_medals predict``: finding the image series of a folder, reading it (SimpleITK's
series reader, then the same canonical orientation as every other image: DICOM is LPS) with its mask prompts, and
writing a prediction as a DICOM SEG (highdicom) that references the source series."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import canonical_image
from nnunetv2_medals.inference.case_files import checked_image_header
from nnunetv2_medals.io_utils import atomic_write_bytes

#: DICOM "LO" values (segment labels, tracking ids) hold at most 64 characters
_DICOM_LO = 64
#: what an instance needs to be a slice of a 3D volume
_IMAGE_TAGS = ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "SeriesInstanceUID")


@dataclass(frozen=True)
class DicomSeries:
    """One image series of a folder: its files in the series reader's slice order."""

    folder: Path
    uid: str
    files: tuple[str, ...]


def dicom_image_series(folder: Path) -> tuple[list[tuple[str, int, str]], int]:
    """The DICOM image series in ``folder`` (not recursive) as (SeriesInstanceUID, slices, description), largest
    first, and how many DICOM files the folder holds at all (image series or not)."""
    import pydicom

    counts: dict[str, int] = {}
    descriptions: dict[str, str] = {}
    n_dicom = 0
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # not a DICOM file (pydicom raises several types for foreign files)
            continue
        n_dicom += 1
        if all(k in ds for k in _IMAGE_TAGS):
            uid = str(ds.SeriesInstanceUID)
            counts[uid] = counts.get(uid, 0) + 1
            descriptions.setdefault(uid, str(ds.get("SeriesDescription", "")))
    return sorted(((uid, n, descriptions[uid]) for uid, n in counts.items()), key=lambda s: -s[1]), n_dicom


def largest_series(folder: Path) -> DicomSeries | None:
    """The folder's largest DICOM image series (saying which when there are several), None when the folder holds
    no DICOM file; DICOM files without an image series, or a one-slice series, are an error."""
    series, n_dicom = dicom_image_series(folder)
    if not n_dicom:
        return None
    if not series:
        raise MedalSInputError(folder, "-i", f"holds {n_dicom} DICOM file{'s' if n_dicom > 1 else ''} but no image "
                                             f"series (no instance with pixel rows/columns, position and "
                                             f"orientation: e.g. only reports, SEG or RTSTRUCT objects); give the "
                                             f"folder of the CT/MR series")
    uid, slices, description = series[0]
    if len(series) > 1:
        others = ", ".join(f"{u} ({n} slices)" for u, n, _ in series[1:])
        print(f"{folder}: {len(series)} DICOM series; using the largest, {uid} ({slices} slices"
              f"{', ' + description if description else ''}); not used: {others}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if len(files) < 2:
        raise MedalSInputError(folder, "-i", f"DICOM series {uid} has {len(files)} slice; a 3D series is needed")
    return DicomSeries(folder, uid, tuple(files))


def read_series(series: DicomSeries) -> sitk.Image:
    """The series as one 3D SimpleITK image (LPS world geometry, values after the rescale tags, e.g. HU)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "unreadable")
        raise MedalSInputError(series.folder, "-i", f"DICOM series {series.uid} cannot be read ({first})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MedalSInputError(series.folder, "-i", f"DICOM series {series.uid} is not a 3D grey-value volume")
    return image


def _grid_difference(mask: sitk.Image, image: sitk.Image) -> str | None:
    """What differs between a mask prompt's and its DICOM series' grid, or None."""
    if mask.GetSize() != image.GetSize():
        return f"shape {mask.GetSize()} (x, y, z) does not match the series' {image.GetSize()}"
    tolerance = 1e-2 * min(image.GetSpacing())
    for what, a, b, atol in (("spacing", mask.GetSpacing(), image.GetSpacing(), tolerance),
                             ("origin", mask.GetOrigin(), image.GetOrigin(), tolerance),
                             ("direction", mask.GetDirection(), image.GetDirection(), 1e-3)):
        if not np.allclose(a, b, rtol=0, atol=atol):
            return f"{what} {tuple(round(v, 4) for v in a)} does not match the series' {tuple(round(v, 4) for v in b)}"
    return None


def read_dicom_case(series: DicomSeries, prompts) -> tuple[np.ndarray, dict, list[np.ndarray | None]]:
    """A series in the canonical orientation (1, *S), its reader-style properties and one canonical mask prompt per
    prompt (a file on the series' grid, e.g. a label map this command wrote) or None."""
    volume = read_series(series)
    image, props = canonical_image(volume)
    if image.size == 0 or not np.isfinite(image).all():
        raise MedalSInputError(series.folder, "-i", "the series is empty or holds NaN/infinite values")
    masks = []
    for i, p in enumerate(prompts):
        if p.mask is None:
            masks.append(None)
            continue
        checked_image_header(p.mask, f"prompts[{i}].mask", finite=False)
        mask = sitk.ReadImage(str(p.mask))
        differs = _grid_difference(mask, volume)
        if differs:
            raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"{differs}; a mask prompt must be on its image's "
                                                                f"grid ({series.folder})")
        masks.append(canonical_image(mask)[0][0] > 0)
    return image, props, masks


def write_dicom_seg(label_map: np.ndarray, prompts: Sequence, series: DicomSeries,
                    path: str | os.PathLike) -> None:
    """A DICOM SEG of ``label_map`` (Z, Y, X in the series' stored slice order: slice i lies on ``series.files[i]``):
    one binary segment per prompt labelled with its text, a frame per source slice and segment (empty ones kept),
    referencing the source series, study and patient. Written atomically."""
    from importlib.metadata import PackageNotFoundError, version

    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    try:
        software = version("nnunetv2-medals")
    except PackageNotFoundError:
        software = "0"
    sources = [pydicom.dcmread(f) for f in series.files]
    algorithm = hd.AlgorithmIdentificationSequence(name="nnunetv2-medals (Medal S)", version=software,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segment_of_label = np.zeros(max([int(label_map.max(initial=0))] + [p.label for p in prompts]) + 1, np.uint16)
    descriptions = []
    for i, p in enumerate(prompts):
        segment_of_label[p.label] = i + 1
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=p.text[:_DICOM_LO],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.AnatomicalStructure,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=p.text[:_DICOM_LO]))
    segments = segment_of_label[label_map]  # label-map style: each voxel its segment number
    if len(prompts) == 1:
        segments = segments.astype(bool)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=segments, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="nnunetv2-medals", manufacturer_model_name="Medal S text-prompted "
                                                                                   "segmentation",
        software_versions=software, device_serial_number="0",
        series_description=("Medal S: " + ", ".join(p.text for p in prompts))[:_DICOM_LO],
        omit_empty_frames=False)
    buffer = io.BytesIO()
    seg.save_as(buffer)
    atomic_write_bytes(path, buffer.getvalue())
