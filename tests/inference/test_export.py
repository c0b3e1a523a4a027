"""Export to the image geometry (chunked vs nnU-Net's own), pasting an ROI result, the challenge ``segs`` numbering."""
import numpy as np
import pytest
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

from nnunetv2_medals.inference.export import (PromptedPrediction, challenge_segs, paste_into_image,
                                              prompt_label_manager, to_image_geometry, write_challenge_npz)
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.postprocessing import probabilities_to_label_map
from nnunetv2_medals.text_prompts.prompt_file import Prompt


def test_export_a_prompt_at_a_time_equals_nnunets_export_of_all(preprocessed_phantom, smoke_model):
    """The image-geometry export runs a few prompts at a time (memory); it must equal nnU-Net's export of all."""
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    data, props, _ = predictor.preprocess_case(image, [])
    labels = [3, 1, 7, 2]
    predictor._text = predictor.embed(["liver", "spleen", "left kidney", "kidneys"])
    predictor._n_image_channels = data.shape[0]
    predictor.label_manager = prompt_label_manager(labels)
    probs = predictor._probabilities(torch.from_numpy(data) if isinstance(data, np.ndarray) else data, None)
    chunked, label_map = to_image_geometry(probs, props, labels, predictor.plans_manager,
                                           predictor.configuration_manager, voxel_budget=1)  # one prompt per export
    _, whole = convert_predicted_logits_to_segmentation_with_correct_shape(
        torch.logit(probs.clamp(1e-6, 1 - 1e-6)), predictor.plans_manager, predictor.configuration_manager,
        prompt_label_manager(labels), props, return_probabilities=True)
    assert chunked.dtype == np.float16 and chunked.shape == whole.shape
    np.testing.assert_allclose(chunked.astype(np.float32), whole, atol=1e-3)
    expected = probabilities_to_label_map(whole, labels)
    assert (label_map != expected).mean() < 1e-4   # float16 ties at exactly 0.5 may differ, nothing else
    assert set(np.unique(label_map)) <= {0, *labels}


def _result(prompts, label_map, instances, properties=None):
    n = len(prompts)
    probabilities = np.stack([(label_map == p.label).astype(np.float16) for p in prompts]) if n else None
    return PromptedPrediction(label_map, instances, probabilities, tuple(prompts), properties or {"source": "crop"},
                              {"prompts": [], "spacing": [9.0, 9.0, 9.0]})


def test_paste_puts_the_roi_result_back_and_leaves_zeros_outside():
    prompts = [Prompt("liver", 3), Prompt("lymph node", 5, instance=True)]
    crop = np.zeros((2, 3, 4), np.uint16)
    crop[0, 0, 0], crop[1, 2, 3] = 3, 5
    numbered = (crop == 5).astype(np.uint16)
    roi = (slice(1, 3), slice(2, 5), slice(0, 4))
    pasted = paste_into_image(_result(prompts, crop, {5: numbered}), roi, (4, 6, 5), {"spacing": [2.0, 1.0, 1.0]})
    assert pasted.label_map.shape == (4, 6, 5) and np.array_equal(pasted.label_map[roi], crop)
    assert pasted.label_map.sum() == crop.sum() and pasted.instances[5].sum() == 1
    assert pasted.probabilities.shape == (2, 4, 6, 5) and pasted.probabilities[(slice(None), *roi)].sum() == 2
    assert pasted.summary["spacing"] == [2.0, 1.0, 1.0] and pasted.properties["source"] == "crop"


def test_challenge_segs_number_instances_across_instance_prompts(tmp_path):
    prompts = [Prompt("liver", 1), Prompt("nodes", 2, instance=True), Prompt("lesions", 3, instance=True)]
    label_map = np.array([[[1, 2, 2, 3, 0]]], np.uint16)
    instances = {2: np.array([[[0, 1, 2, 0, 0]]], np.uint16), 3: np.array([[[0, 0, 0, 1, 0]]], np.uint16)}
    result = _result(prompts, label_map, instances)
    assert challenge_segs(result).ravel().tolist() == [1, 1, 2, 3, 0]
    semantic = _result(prompts[:1], np.array([[[1, 0]]], np.uint16), {})
    assert challenge_segs(semantic).dtype == np.uint16 and challenge_segs(semantic).ravel().tolist() == [1, 0]
    write_challenge_npz(challenge_segs(result), tmp_path / "case.npz")
    assert np.load(tmp_path / "case.npz")["segs"].ravel().tolist() == [1, 1, 2, 3, 0]


def _case_result(prompts, shape=(6, 7, 8)):
    import SimpleITK as sitk

    from nnunetv2_medals.geometry import canonical_image

    _, properties = canonical_image(sitk.GetImageFromArray(np.zeros(shape, np.float32)))
    label_map = np.zeros(shape, np.uint16)
    label_map[1:3, 1:3, 1:3] = prompts[0].label
    instances = {p.label: (label_map == p.label).astype(np.uint16) for p in prompts if p.instance}
    summary = {"prompts": [{"text": p.text, "label": p.label, "instance": p.instance, "mask": None} for p in prompts]}
    return PromptedPrediction(label_map, instances, np.zeros((len(prompts), *shape), np.float16), tuple(prompts),
                              properties, summary)


def test_a_case_is_written_as_one_unit_and_an_earlier_runs_files_go(tmp_path):
    """Issue #19: the JSON is the "complete" marker (written last), temporary files of a killed run and files of an
    earlier run with other prompts are removed when the case is written again."""
    from nnunetv2_medals.geometry import MedalSImageIO
    from nnunetv2_medals.inference.export import case_files, summary_matches, write_prediction

    first = [Prompt("lymph node", 3, instance=True), Prompt("spleen", 1)]
    write_prediction(_case_result(first), str(tmp_path / "case"), MedalSImageIO(), ".nii.gz", save_probabilities=True)
    assert summary_matches(tmp_path / "case", first)
    assert not summary_matches(tmp_path / "case", first[::-1])
    (tmp_path / ".tmp_999_case_instances_label3.nii.gz").write_bytes(b"half")   # a killed writer's leftovers
    (tmp_path / ".tmp_case_probabilities.npz").write_bytes(b"half")
    (tmp_path / "case_2_instances_label3.nii.gz").write_bytes(b"another case")   # not this case's file
    second = [Prompt("liver", 2)]
    write_prediction(_case_result(second), str(tmp_path / "case"), MedalSImageIO(), ".nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json", "case.nii.gz", "case_2_instances_label3.nii.gz"]
    assert summary_matches(tmp_path / "case", second) and not summary_matches(tmp_path / "case", first)
    assert case_files(tmp_path / "case", ".nii.gz")["temporary"] == []


def test_a_failed_write_leaves_no_marker_and_no_temporary_files(tmp_path, monkeypatch):
    from nnunetv2_medals.geometry import MedalSImageIO
    from nnunetv2_medals.inference import export

    prompts = [Prompt("lymph node", 3, instance=True)]
    export.write_prediction(_case_result(prompts), str(tmp_path / "case"), MedalSImageIO(), ".nii.gz")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        export.write_prediction(_case_result(prompts), str(tmp_path / "case"), MedalSImageIO(), ".nii.gz",
                                save_probabilities=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "case.json" not in names and not [n for n in names if n.startswith(".tmp")]
