"""BiomedSegFM challenge npz -> one merged text-prompted nnU-Net dataset."""
import hashlib
import json

import numpy as np
import SimpleITK as sitk
import pytest

from tests.helpers import read_image

PROMPTS = {
    "CT_Alpha": {"1": ["Liver", "Liver in abdominal CT"], "2": ["Left kidney", "left renal structure"],
                 "instance_label": 0},
    "CT_Beta": {"1": ["Spleen", "Splenic tissue in CT"], "2": ["Liver", "Hepatic tissue in CT"],
                "instance_label": 0},
    "CT_Gamma": {"1": ["Liver tumors", "Hepatic lesions in CT"], "instance_label": 1},
    "MR_Unused": {"1": ["Prostate"], "instance_label": 0},
}


def _npz(path, gts, spacing=(0.8, 0.8, 2.5), with_gts=True):
    rng = np.random.default_rng(len(str(path)))
    imgs = rng.integers(0, 256, gts.shape).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"imgs": imgs, "spacing": np.array(spacing)}
    if with_gts:
        arrays["gts"] = gts
    np.savez_compressed(path, **arrays)


@pytest.fixture()
def challenge_root(tmp_path):
    root = tmp_path / "npz"
    shape = (6, 10, 12)
    a = np.zeros(shape, np.uint8)
    a[1:3, 2:5, 2:6], a[3:5, 5:8, 6:10] = 1, 2                     # liver, left kidney
    b = np.zeros(shape, np.uint8)
    b[1:3, 1:4, 1:4], b[3:6, 4:9, 5:11] = 1, 2                     # spleen, liver
    g = np.zeros(shape, np.uint16)
    g[1:3, 1:3, 1:3], g[4:6, 6:9, 7:11] = 1, 7                     # two tumour instances (ids 1 and 7)
    _npz(root / "train" / "CT" / "CT_Alpha" / "alpha_001.npz", a)
    _npz(root / "train" / "CT" / "CT_Alpha" / "alpha_002.npz", a[:, ::-1].copy())
    _npz(root / "more" / "CT_Beta" / "beta_001.npz", b, spacing=(0.8, 1.0, 3.0))   # challenge order: x, y, z
    _npz(root / "more" / "CT_Gamma" / "sub" / "gamma_001.npz", g)
    _npz(root / "more" / "CT_Beta" / "beta_test.npz", b, with_gts=False)
    prompts = tmp_path / "prompt_file" / "prompts.json"
    prompts.parent.mkdir()
    prompts.write_text(json.dumps(PROMPTS))
    return root, prompts


def _digests(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_datasets_with_a_shared_class_merge_into_one_valid_dataset(challenge_root, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunetv2_medals.datasets.biomedsegfm import INSTANCE_FOLDER
    from nnunetv2_medals.cli import main
    from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset

    root, prompts = challenge_root
    before = _digests(root) | _digests(prompts.parent)
    out = tmp_path / "Dataset950_Merged"
    main(["convert-biomedsegfm", "-i", str(root), "-prompts", str(prompts), "-d", "950", "-o", str(out),
          "--datasets", "CT_Alpha", "CT_Beta", "CT_Gamma"])
    assert (_digests(root) | _digests(prompts.parent)) == before

    ds = load_text_prompted_dataset(out)
    labels = {k: v for k, v in ds.labels.items() if v}
    assert labels == {"liver": 1, "left kidney": 2, "spleen": 3, "liver tumors": 4}   # "Liver" of both is one
    raw = json.loads((out / "dataset.json").read_text())
    assert raw["text_prompts"]["liver"]["prompts"] == ["Liver", "Liver in abdominal CT", "Hepatic tissue in CT"]
    assert raw["text_prompts"]["liver tumors"]["instance"] is True
    assert raw["imaging_modality"] == "CT" and raw["channel_names"] == {"0": "rgb_to_0_1"}
    assert ds.annotated_labels["CT_Beta_beta_001"] == {"spleen", "liver"}
    assert ds.annotated_labels["CT_Gamma_gamma_001"] == {"liver tumors"}

    seg, spacing = read_image(out / "labelsTr" / "CT_Beta_beta_001.nii.gz")
    # what the challenge's converter makes of the file: sitk.GetImageFromArray(imgs) + SetSpacing(spacing)
    reference = sitk.GetImageFromArray(np.zeros((6, 10, 12), np.uint8))
    reference.SetSpacing((0.8, 1.0, 3.0))
    assert np.allclose(spacing, reference.GetSpacing()) and np.allclose(spacing, (0.8, 1.0, 3.0))  # z stays z
    assert (seg[1:3, 1:4, 1:4] == 3).all() and (seg[3:6, 4:9, 5:11] == 1).all()   # CT_Beta's 2 -> global liver
    seg, _ = read_image(out / "labelsTr" / "CT_Gamma_gamma_001.nii.gz")
    assert set(np.unique(seg)) == {0, 4}                    # training labels are binary
    inst, _ = read_image(out / INSTANCE_FOLDER / "CT_Gamma_gamma_001.nii.gz")
    assert set(np.unique(inst)) == {0, 1, 7}                # instance ids kept for evaluation
    img, _ = read_image(out / "imagesTr" / "CT_Alpha_alpha_001_0000.nii.gz")
    with np.load(root / "train" / "CT" / "CT_Alpha" / "alpha_001.npz") as npz:
        assert np.array_equal(img, npz["imgs"])
    assert (out / "imagesTs" / "CT_Beta_beta_test_0000.nii.gz").is_file()
    assert raw["numTraining"] == 4
    verify_dataset_integrity(str(out), num_processes=1)


def test_bad_input_names_the_file_and_writes_nothing(challenge_root, tmp_path):
    from nnunetv2_medals.datasets.biomedsegfm import convert_biomedsegfm
    from nnunetv2_medals.errors import MedalSInputError

    root, prompts = challenge_root
    bad = root / "more" / "CT_Beta" / "beta_002.npz"
    np.savez(bad, imgs=np.zeros((4, 4, 4), np.uint8), gts=np.zeros((4, 4, 5), np.uint8), spacing=np.ones(3))
    out = tmp_path / "Dataset951_Bad"
    with pytest.raises(MedalSInputError, match=r"beta_002\.npz: field 'gts'"):
        convert_biomedsegfm(root, prompts, 951, output=out)
    assert not out.exists() and not list(tmp_path.glob(".Dataset951_Bad*"))
    with pytest.raises(MedalSInputError, match="MR_Unused"):
        convert_biomedsegfm(root, prompts, 951, output=out, datasets=["MR_Unused"])
    with pytest.raises(MedalSInputError, match="CT_Nope"):
        convert_biomedsegfm(root, prompts, 951, output=out, datasets=["CT_Nope"])
