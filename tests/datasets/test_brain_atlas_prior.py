"""The brain job's hybrid prompts: each prompt gets the unperturbed atlas label of its structure as mask prompt."""
import json

import nibabel as nib
import numpy as np
import pytest

from nnunetv2_medals.datasets.brain_atlas import write_atlas_prior_prompts
from nnunetv2_medals.errors import MedalSInputError


def _dataset(tmp_path):
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[1:3, 2:5, 3:6] = 1
    labels[5:7, 5:8, 2:4] = 4
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    (tmp_path / "ds" / "labelsTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "ds" / "labelsTr" / "brain_000.nii.gz"))
    return tmp_path / "ds", labels, affine


def test_each_prompt_gets_its_structure_from_the_atlas_labels(tmp_path):
    dataset, labels, affine = _dataset(tmp_path)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"modality": "MRI", "prompts": [{"text": "left hippocampus", "label": 1},
                                                                   {"text": "right amygdala", "label": 4}]}))
    out = write_atlas_prior_prompts(dataset, prompts, tmp_path / "prior")
    written = json.loads(out.read_text())
    assert written["modality"] == "MRI" and [p["text"] for p in written["prompts"]] == ["left hippocampus",
                                                                                          "right amygdala"]
    for p in written["prompts"]:
        mask = nib.load(p["mask"])
        assert np.array_equal(np.asarray(mask.dataobj), (labels == p["label"]).astype(np.uint8))
        assert np.allclose(mask.affine, affine)


def test_a_label_the_atlas_does_not_hold_is_refused_and_nothing_is_written(tmp_path):
    dataset, _, _ = _dataset(tmp_path)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"text": "fourth ventricle", "label": 21}]}))
    with pytest.raises(MedalSInputError, match=r"prompts\[0\]\.label"):
        write_atlas_prior_prompts(dataset, prompts, tmp_path / "prior")
    assert not (tmp_path / "prior").exists()
    with pytest.raises(MedalSInputError, match="brain-atlas"):
        write_atlas_prior_prompts(tmp_path / "missing", prompts, tmp_path / "prior")
