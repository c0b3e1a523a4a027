"""The phantom generator: anatomy that makes text matter, random geometry, atomic output."""
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_medals.datasets.phantom import LABELS, make_phantom_case, write_phantom_dataset
from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from tests.helpers import nnunet_env, run


def test_anatomy_laterality_nesting_and_instances():
    rng = np.random.default_rng(3)
    spacings = []
    for _ in range(4):
        case = make_phantom_case(rng)
        lab = case.labels
        spacings.append(case.spacing_mm)
        for name, value in LABELS.items():
            if value:
                assert (lab == value).sum() > 0, name
        # LPS: +x is the patient's left, so the left kidney has the larger x index
        x_left = ndimage.center_of_mass(lab == LABELS["left kidney"])[2]
        x_right = ndimage.center_of_mass(lab == LABELS["right kidney"])[2]
        assert x_left > x_right + 10
        assert ndimage.center_of_mass(lab == LABELS["liver parenchyma"])[2] < lab.shape[2] / 2
        # the tumour sits inside the liver: every tumour voxel touches liver or tumour only
        tumour = lab == LABELS["liver tumour"]
        ring = ndimage.binary_dilation(tumour) & ~tumour
        assert set(np.unique(lab[ring])) <= {LABELS["liver parenchyma"], LABELS["liver tumour"]}
        _, n_nodes = ndimage.label(lab == LABELS["lymph node"])
        assert n_nodes >= 2
        # kidneys look alike: only their side tells them apart
        img = case.image_hu.astype(float)
        assert abs(img[lab == 1].mean() - img[lab == 2].mean()) < 15
        assert img[lab == 0].min() < -900 and img[lab == LABELS["left kidney"]].mean() > 120
    spacings = np.array(spacings)
    assert np.all(spacings[:, 0] > spacings[:, 1] * 1.1)  # anisotropic
    assert np.ptp(spacings[:, 0]) > 0.1  # random


def test_command_writes_a_valid_text_prompted_dataset(tmp_path):
    env = nnunet_env(tmp_path)
    run(["nnunetv2_medals", "phantom", "-d", "7", "-n", "3", "--num_test", "1"], env)
    folder = tmp_path / "raw" / "Dataset007_MedalSPhantom"
    ds = load_text_prompted_dataset(folder)
    assert ds.modality == "CT" and "liver" in ds.target_names
    images = sorted((folder / "imagesTr").iterdir())
    assert [p.name for p in images] == [f"phantom_tr_{i:03d}_0000.nii.gz" for i in range(3)]
    img = sitk.ReadImage(str(images[0]))
    seg = sitk.ReadImage(str(folder / "labelsTr" / "phantom_tr_000.nii.gz"))
    assert img.GetSize() == seg.GetSize() and img.GetSpacing() == seg.GetSpacing()
    assert (folder / "imagesTs" / "phantom_ts_000_0000.nii.gz").is_file()
    again = run(["nnunetv2_medals", "phantom", "-d", "7", "-n", "3"], env, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import nnunetv2_medals.datasets.phantom as phantom

    calls = []

    def failing_write(array, spacing, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        path.write_bytes(b"partial")

    monkeypatch.setattr(phantom, "write_nifti", failing_write)
    with pytest.raises(OSError):
        write_phantom_dataset(tmp_path / "Dataset001_X", num_cases=3)
    assert list(tmp_path.iterdir()) == []


def test_gallbladder_option_adds_a_new_target_and_leaves_the_default_alone(tmp_path):
    from nnunetv2_medals.datasets.phantom import GALLBLADDER, GALLBLADDER_LABEL, phantom_dataset_json

    rng = np.random.default_rng(5)
    for _ in range(3):
        case = make_phantom_case(rng, gallbladder=True)
        lab, img = case.labels, case.image_hu.astype(float)
        gallbladder = lab == GALLBLADDER_LABEL
        assert ndimage.label(gallbladder)[1] == 1 and gallbladder.sum() > 50
        for name, value in LABELS.items():
            if value:
                assert (lab == value).sum() > 0, name  # every default structure is still there
        # under the liver, against it, outside the tumour; bile is darker than liver, and than the kidneys
        liver = np.isin(lab, [LABELS["liver parenchyma"], LABELS["liver tumour"]])
        assert ndimage.center_of_mass(gallbladder)[0] < ndimage.center_of_mass(liver)[0]
        ring = ndimage.binary_dilation(gallbladder) & ~gallbladder
        assert (lab[ring] == LABELS["liver parenchyma"]).any()
        assert img[gallbladder].mean() < img[lab == LABELS["liver parenchyma"]].mean() - 30
    # the default stream is untouched: seed 0's default case is the one the generator made before the option
    # existed (label map hash and intensity statistics recorded from that version)
    plain = make_phantom_case(np.random.default_rng(0))
    assert plain.labels.shape == (25, 56, 75)
    assert hashlib.sha256(np.ascontiguousarray(plain.labels).tobytes()).hexdigest() == \
        "08f942490e3a87bedfaaab0b9bdb9a052298b0724093852955a16ac7e7c116d2"
    hu = plain.image_hu.astype(np.float64)
    assert hu.mean() == pytest.approx(-552.50886, abs=0.01) and hu.std() == pytest.approx(494.42657, abs=0.01)
    assert GALLBLADDER not in phantom_dataset_json(3)["labels"]
    assert GALLBLADDER not in phantom_dataset_json(3)["text_prompts"]

    folder = write_phantom_dataset(tmp_path / "Dataset009_MedalSPhantomGallbladder", num_cases=2, num_test=1,
                                   gallbladder=True)
    ds = load_text_prompted_dataset(folder)
    assert GALLBLADDER in ds.target_names and len(ds.target_names) == 9
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "phantom_tr_000.nii.gz")))
    assert (seg == GALLBLADDER_LABEL).any()
