"""The text-prompted dataset validator: what it accepts, and one clear error per mistake."""
import copy
import json

import numpy as np
import pytest

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset, parse_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.datasets.phantom import phantom_dataset_json

GOOD = {
    "channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 2,
    "labels": {"background": 0, "liver": 1, "tumour": 2, "left kidney": 3},
    "text_prompts": {"liver": ["liver", "hepatic tissue"], "tumour": {"prompts": ["liver tumour"], "instance": True},
                     "left kidney": "left kidney"},
    "text_regions": {"whole liver": {"labels": ["liver", "tumour"], "prompts": ["whole liver"]}},
    "imaging_modality": "ct",
}


def _error(ds, **kw) -> MedalSInputError:
    with pytest.raises(MedalSInputError) as info:
        parse_text_prompted_dataset(ds, "/data/Dataset1/dataset.json", **kw)
    return info.value


def test_targets_are_regions_then_labels_by_value():
    ds = parse_text_prompted_dataset(GOOD, "dataset.json")
    assert ds.target_names == ["whole liver", "liver", "tumour", "left kidney"]
    assert ds.target("whole liver").label_values == (1, 2) and ds.target("whole liver").is_region
    assert ds.target("tumour").instance and not ds.target("liver").instance
    assert ds.target("left kidney").prompts == ("left kidney",)
    assert ds.modality == "CT"
    assert ds.all_phrasings() == ["whole liver", "liver", "hepatic tissue", "liver tumour", "left kidney"]


def test_nnunet_region_labels_put_regions_under_their_members():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    ds = parse_text_prompted_dataset(GOOD, "dataset.json")
    labels, order = ds.nnunet_region_labels()
    manager = LabelManager(labels, order)
    assert manager.has_regions and manager.foreground_regions == [(1, 2), (1,), (2,), (3,)]
    probs = np.zeros((4, 1, 1, 3))
    probs[0, ..., :2] = 0.9   # whole liver on voxels 0, 1
    probs[2, ..., 1] = 0.8    # tumour on voxel 1
    probs[3, ..., 2] = 0.7    # left kidney on voxel 2
    assert manager.convert_probabilities_to_segmentation(probs).ravel().tolist() == [1, 2, 3]
    no_regions = copy.deepcopy(GOOD)
    del no_regions["text_regions"]
    labels, order = parse_text_prompted_dataset(no_regions, "dataset.json").nnunet_region_labels()
    manager = LabelManager(labels, order)
    assert manager.has_regions and order == [1, 2, 3] and manager.num_segmentation_heads == 3


def test_label_without_prompts_names_file_and_field():
    ds = copy.deepcopy(GOOD)
    del ds["text_prompts"]["left kidney"]
    err = _error(ds)
    assert err.file == "/data/Dataset1/dataset.json" and err.field == "text_prompts.left kidney"
    assert "/data/Dataset1/dataset.json" in str(err) and "no prompts" in str(err)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["text_regions"]["whole liver"]["labels"].append("lung"), "text_regions.whole liver.labels[2]"),
    (lambda d: d["text_prompts"].update(lung=["lung"]), "text_prompts.lung"),
    (lambda d: d["text_prompts"].update(liver=[]), "text_prompts.liver"),
    (lambda d: d["text_prompts"].update(liver={"prompts": ["liver"], "colour": "red"}), "text_prompts.liver.colour"),
    (lambda d: d["text_prompts"].update(tumour=["liver"]), "text_prompts.tumour"),
    (lambda d: d.update(imaging_modality="XRAY"), "imaging_modality"),
    (lambda d: d.update(modality="CT"), "modality"),
    (lambda d: d["labels"].update(liver=[1, 2]), "labels.liver"),
    (lambda d: d.pop("text_prompts"), "text_prompts"),
    (lambda d: d["text_regions"].update(liver={"labels": ["liver"], "prompts": ["x"]}), "text_regions.liver"),
])
def test_each_mistake_gets_one_error_naming_its_field(mutate, field):
    ds = copy.deepcopy(GOOD)
    mutate(ds)
    assert _error(ds).field == field


def test_partial_annotation_marks_targets_and_rejects_unknown_names():
    ds = parse_text_prompted_dataset(GOOD, "dataset.json", annotated_labels={"c1": ["liver", "tumour"]})
    assert ds.annotated_target_mask("c1") == [True, True, True, False]
    assert ds.annotated_target_mask("c2") == [True] * 4  # not listed: fully annotated
    err = _error(GOOD, annotated_labels={"c1": ["livr"]}, annotated_file="/data/annotated_labels.json")
    assert err.file == "/data/annotated_labels.json" and err.field == "c1[0]"
    assert _error(GOOD, annotated_labels={"c9": []}, case_ids={"c1"}).field == "c9"


def test_load_from_folder_reads_annotated_labels(tmp_path):
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "labelsTr" / "c1.nii.gz").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps(GOOD))
    (tmp_path / "annotated_labels.json").write_text(json.dumps({"c1": ["liver"]}))
    ds = load_text_prompted_dataset(tmp_path)
    assert ds.annotated_labels == {"c1": frozenset({"liver"})}
    (tmp_path / "annotated_labels.json").write_text(json.dumps({"c2": ["liver"]}))
    with pytest.raises(MedalSInputError, match="annotated_labels.json: field 'c2'"):
        load_text_prompted_dataset(tmp_path)


def test_invalid_json_is_reported_with_its_file(tmp_path):
    (tmp_path / "dataset.json").write_text("{")
    with pytest.raises(MedalSInputError, match="dataset.json: field '<file>': is not valid JSON"):
        load_text_prompted_dataset(tmp_path)


def test_phantom_dataset_json_is_valid():
    ds = parse_text_prompted_dataset(phantom_dataset_json(5), "dataset.json")
    assert ds.target("liver").label_values == (3, 4)
    assert ds.target("lymph node").instance


def test_label_values_must_be_consecutive_as_nnunet_requires():
    """Issue #19: spleen declared 9 in a dataset of labels 0..4 passed our validation."""
    ds = phantom_dataset_json(2)
    ds["labels"]["spleen"] = 9
    with pytest.raises(MedalSInputError, match=r"dataset.json: field 'labels.spleen': value 9 leaves a gap: nnU-Net "
                                               r"needs consecutive label values 0, 1, …, "):
        parse_text_prompted_dataset(ds, "dataset.json")
