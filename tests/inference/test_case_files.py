"""Reading one case defensively (issue #19): damaged files, raw non-finite voxels, 2D images, channel count and mask
prompts on another grid are each one error naming the file; a good case reads as nnU-Net's reader reads it."""
from types import SimpleNamespace

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import MedalSImageIO
from nnunetv2_medals.inference.case_files import read_case, read_image
from nnunetv2_medals.text_prompts.prompt_file import Prompt

PREDICTOR = SimpleNamespace(plans_manager=SimpleNamespace(plans={"image_reader_writer": "SimpleITKIOWithReorient"}),
                            dataset_json={"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})


def _image(path, array=None, spacing=(4.5, 4.5, 7.0), origin=(-10.0, 5.0, 3.0)):
    array = np.random.default_rng(0).normal(size=(12, 14, 16)).astype(np.float32) if array is None else array
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def test_a_good_case_reads_as_nnunets_reader_reads_it(tmp_path):
    path = _image(tmp_path / "case_0000.nii.gz")
    image, props = read_image(PREDICTOR, [str(path)])
    expected, _ = MedalSImageIO().read_images([str(path)])
    assert np.array_equal(image, expected) and props["spacing"] == [7.0, 4.5, 4.5]


def test_a_truncated_gzip_file_is_refused_not_zero_filled(tmp_path):
    path = _image(tmp_path / "case_0000.nii.gz")
    path.write_bytes(path.read_bytes()[:-400])
    sitk.ReadImage(str(path))  # what the reader alone does: no error, the missing voxels are zeros
    with pytest.raises(MedalSInputError, match="case_0000.nii.gz: field 'image': is damaged or truncated"):
        read_case(PREDICTOR, [str(path)], [])


def test_non_finite_voxels_are_found_in_the_raw_nifti(tmp_path):
    array = np.random.default_rng(0).normal(size=(12, 14, 16)).astype(np.float32)
    array[2, 3, 4], array[5, 6, 7] = np.nan, -np.inf
    path = _image(tmp_path / "case_0000.nii.gz", array)
    assert np.isfinite(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))).all()  # SimpleITK hides them
    assert not np.isfinite(np.asanyarray(nibabel.load(str(path)).dataobj)).all()
    with pytest.raises(MedalSInputError, match="case_0000.nii.gz: field 'image': holds 2 NaN or infinite voxels"):
        read_case(PREDICTOR, [str(path)], [])


def test_a_2d_image_is_refused(tmp_path):
    path = tmp_path / "flat_0000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 30), np.float32)), str(path))
    with pytest.raises(MedalSInputError, match=r"flat_0000.nii.gz: field 'image': is a 2D image \(size 30 x 20\)"):
        read_case(PREDICTOR, [str(path)], [])


def test_a_wrong_number_of_channels_is_one_clear_line(tmp_path):
    files = [str(_image(tmp_path / f"case_{c:04d}.nii.gz")) for c in range(2)]
    with pytest.raises(MedalSInputError, match=r"the model expects 1 channel \(_0000\); case has 2 "
                                               r"\(case_0000, case_0001\)"):
        read_case(PREDICTOR, files, [])


@pytest.mark.parametrize("change", ["origin", "direction", "spacing", "shape"])
def test_mask_prompts_must_be_on_the_images_grid(tmp_path, change):
    image = _image(tmp_path / "case_0000.nii.gz")
    mask = sitk.GetImageFromArray(np.ones((12, 14, 16) if change != "shape" else (12, 14, 15), np.uint8))
    mask.SetSpacing((4.5, 4.5, 7.0) if change != "spacing" else (4.5, 4.5, 6.0))
    mask.SetOrigin((-10.0, 5.0, 3.0) if change != "origin" else (-10.0, 5.0, 23.0))
    if change == "direction":
        mask.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(mask, str(tmp_path / "hint.nii.gz"))
    prompts = [Prompt("spleen", 1, mask=tmp_path / "hint.nii.gz")]
    with pytest.raises(MedalSInputError, match=f"hint.nii.gz: field 'prompts\\[0\\].mask': {change}"):
        read_case(PREDICTOR, [str(image)], prompts)
    aligned = sitk.GetImageFromArray(np.ones((12, 14, 16), np.uint8))
    aligned.CopyInformation(sitk.ReadImage(str(image)))
    sitk.WriteImage(aligned, str(tmp_path / "hint.nii.gz"))
    _, _, masks = read_case(PREDICTOR, [str(image)], prompts)
    assert masks[0].all()
