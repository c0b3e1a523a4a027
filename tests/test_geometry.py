"""Canonical orientation: the same scan in any voxel order reads as one array and writes back in its own geometry."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from nnunetv2_medals.geometry import (CANONICAL_READER, MedalSImageIO, array_spacing_to_npz_order,
                                      canonical_reader_name, npz_spacing_to_array_order)
from tests.helpers import VOXEL_ORDERS, store_in_voxel_order

# voxel order name -> (axis permutation of the LPS array (z, y, x), axes flipped afterwards)
def _lps_scan():
    """An asymmetric scan (a block on the patient's left only) stored LPS, with anisotropic spacing."""
    rng = np.random.default_rng(0)
    array = rng.normal(size=(6, 9, 11)).astype(np.float32)  # (z, y, x)
    array[2:4, 3:6, 7:10] += 10  # high x = patient's left in LPS
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.2, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image


def test_every_voxel_order_reads_as_one_array_and_writes_back_in_its_own(tmp_path):
    base = _lps_scan()
    reader = MedalSImageIO()
    arrays = {}
    for order in VOXEL_ORDERS:
        path = tmp_path / f"scan_{order}.nii.gz"
        stored = store_in_voxel_order(base, order)
        sitk.WriteImage(stored, str(path))
        array, props = reader.read_images([str(path)])
        arrays[order] = array
        assert np.allclose(sorted(props["spacing"]), [0.8, 1.2, 3.0])
        # write a "segmentation" (the bright block) back and compare it voxel by voxel with the stored file
        seg = (array[0] > 5).astype(np.uint8)
        out = tmp_path / f"seg_{order}.nii.gz"
        reader.write_seg(seg, str(out), props)
        written = sitk.ReadImage(str(out))
        assert written.GetSize() == stored.GetSize()
        assert np.allclose(written.GetDirection(), stored.GetDirection())
        assert np.allclose(written.GetOrigin(), stored.GetOrigin())
        assert np.allclose(written.GetSpacing(), stored.GetSpacing())
        assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(stored) > 5)
    for order, array in arrays.items():
        assert np.array_equal(array, arrays["LPS"]), order
    # canonical = RAS-increasing arrays (S, A, R): the block on the patient's left sits at low array index x
    block = np.argwhere(arrays["LPS"][0] > 5)
    assert block[:, 2].max() < arrays["LPS"].shape[3] / 2


def test_writer_keeps_label_values_above_255(tmp_path):
    base = _lps_scan()
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(base, str(path))
    reader = MedalSImageIO()
    array, props = reader.read_images([str(path)])
    seg = np.zeros(array.shape[1:], np.uint16)
    seg[0, 0, 0], seg[1, 1, 1] = 300, 7
    reader.write_seg(seg, str(tmp_path / "seg.nii.gz"), props)
    back, _ = reader.read_seg(str(tmp_path / "seg.nii.gz"))
    assert sorted(np.unique(back).tolist()) == [0, 7, 300]


def test_planners_record_the_canonical_reader_for_medical_formats_only():
    assert canonical_reader_name("SimpleITKIO") == CANONICAL_READER
    assert canonical_reader_name("NibabelIO") == "NibabelIOWithReorient"
    assert canonical_reader_name("NibabelIOWithReorient") == "NibabelIOWithReorient"
    assert canonical_reader_name("Tiff3DIO") == "Tiff3DIO"
    assert canonical_reader_name("NaturalImage2DIO") == "NaturalImage2DIO"


def test_challenge_npz_spacing_is_simpleitk_order():
    """imgs (D, H, W) with spacing (x, y, z): what SimpleITK makes of a file written the challenge's way."""
    imgs = np.zeros((16, 24, 24), np.float32)
    spacing = [0.8, 0.8, 3.0]
    image = sitk.GetImageFromArray(imgs)
    image.SetSpacing(spacing)  # the challenge baseline's converter
    per_array_axis = npz_spacing_to_array_order(spacing)
    assert per_array_axis == [3.0, 0.8, 0.8]
    assert per_array_axis == list(image.GetSpacing())[::-1]
    assert array_spacing_to_npz_order(per_array_axis) == spacing
