"""Two-stage prediction and dynamic resampling plumbing on the smoke model (weights are meaningless here: the
stage-1 result is set by the test, what is checked is where stage 2 runs and how its result comes back)."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunetv2_medals.inference.predictor as predictor_module
from nnunetv2_medals.inference.case_files import read_image
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.inference import two_stage
from nnunetv2_medals.inference.two_stage import predict_two_stage
from nnunetv2_medals.laterality import find_midline
from nnunetv2_medals.resampling import memory_guard
from nnunetv2_medals.text_prompts.prompt_file import Prompt
from tests.helpers import PHANTOM_ID, run


@pytest.fixture()
def stages(smoke_model, preprocessed_phantom):
    coarse = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    fine = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image_file = str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])
    image, props = read_image(fine, [image_file])
    return coarse, fine, image, props


def _force_stage_one(monkeypatch, coarse, label_map):
    original = coarse.predict_array

    def predict_array(*args, **kwargs):
        result = original(*args, **kwargs)
        return dataclasses.replace(result, label_map=label_map)

    monkeypatch.setattr(coarse, "predict_array", predict_array)


def _force_stage_one_box(monkeypatch, coarse, shape):
    """Stage 1 finds one box (label 1) in an image of ``shape``; returns its label map."""
    stage1 = np.zeros(shape, np.uint16)
    stage1[6:14, 16:34, 20:44] = 1
    _force_stage_one(monkeypatch, coarse, stage1)
    return stage1


def test_stage_two_runs_on_the_roi_with_stage_one_as_mask_prompts(stages, monkeypatch):
    coarse, fine, image, props = stages
    shape = image.shape[1:]
    stage1 = np.zeros(shape, np.uint16)
    stage1[8:12, 20:30, 25:40] = 2
    _force_stage_one(monkeypatch, coarse, stage1)
    seen = {}
    original = fine.predict_array

    def spy(crop, spacing, prompts, source="array", masks=None, midline=None):
        seen["shape"], seen["masks"], seen["midline"] = crop.shape[1:], masks, midline
        return original(crop, spacing, prompts, source, masks=masks, midline=midline)

    monkeypatch.setattr(fine, "predict_array", spy)
    prompts = [Prompt("liver", 1), Prompt("spleen", 2)]
    result = predict_two_stage(coarse, fine, image, props, prompts, roi_scale=1.2)
    info = result.summary["two_stage"]
    assert not info["fallback"] and info["roi"] is not None
    roi = tuple(slice(a, b) for a, b in info["roi"])
    assert seen["shape"] == tuple(b - a for a, b in info["roi"])
    # every stage-1 voxel is inside the ROI, and each prompt got its own stage-1 mask
    assert stage1[roi].sum() == stage1.sum()
    assert seen["masks"][0].sum() == 0 and seen["masks"][1].sum() == (stage1 == 2).sum()
    # the result is in the whole image's geometry, empty outside the ROI
    assert result.label_map.shape == shape and result.probabilities.shape == (2, *shape)
    outside = np.ones(shape, bool)
    outside[roi] = False
    assert not result.label_map[outside].any()
    assert result.properties["spacing"] == props["spacing"]
    # the side guard's midline is the whole image's, counted from the ROI's first left-right voxel
    whole = find_midline(image[0], props["spacing"], lr_axis=2)
    assert seen["midline"] == whole.shifted(roi[2].start) and whole.index is not None


def test_stage_two_gets_the_whole_images_midline_on_its_roi(stages, monkeypatch):
    coarse, fine, image, props = stages
    stage1 = np.zeros(image.shape[1:], np.uint16)
    stage1[8:12, 20:30, 25:40] = 1
    _force_stage_one(monkeypatch, coarse, stage1)
    roi = (slice(2, 20), slice(5, 45), slice(9, 60))     # a different start on every axis
    monkeypatch.setattr(two_stage, "stage_two_roi", lambda *a, **k: roi)
    seen = {}
    original = fine.predict_array

    def spy(crop, spacing, prompts, source="array", masks=None, midline=None):
        seen["midline"] = midline
        return original(crop, spacing, prompts, source, masks=masks, midline=midline)

    monkeypatch.setattr(fine, "predict_array", spy)
    predict_two_stage(coarse, fine, image, props, [Prompt("left kidney", 1)])
    whole = find_midline(image[0], props["spacing"], lr_axis=2)
    assert whole.trusted and seen["midline"].index == whole.index - 9


def test_empty_stage_one_falls_back_to_the_whole_image_without_prompts(stages, monkeypatch):
    coarse, fine, image, props = stages
    _force_stage_one(monkeypatch, coarse, np.zeros(image.shape[1:], np.uint16))
    calls = []
    original = fine.predict_array
    monkeypatch.setattr(fine, "predict_array", lambda *a, **k: calls.append((a[0].shape, k.get("masks"))) or
                        original(*a, **k))
    result = predict_two_stage(coarse, fine, image, props, [Prompt("liver", 1)])
    assert result.summary["two_stage"]["fallback"] and result.summary["two_stage"]["roi"] is None
    assert calls == [(image.shape, None)]
    assert result.label_map.shape == image.shape[1:]


def _record_fine_export_spacing(monkeypatch, fine) -> dict:
    """Spy on the export: ``used["spacing"]`` is the network spacing the fine model's result was exported from."""
    used = {}
    original = predictor_module.export_prediction
    config = fine.configuration_manager.configuration

    def record(probs, properties, prompts, plans_manager, configuration_manager, *args, **kwargs):
        if configuration_manager is fine.configuration_manager:
            used["spacing"] = list(config["spacing"])
        return original(probs, properties, prompts, plans_manager, configuration_manager, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "export_prediction", record)
    return used


def test_memory_guard_coarsens_stage_two_on_an_oversized_roi(stages, monkeypatch):
    coarse, fine, image, props = stages
    stage1 = np.ones(image.shape[1:], np.uint16)       # everything is foreground: the ROI is the whole image
    _force_stage_one(monkeypatch, coarse, stage1)
    config = fine.configuration_manager.configuration
    monkeypatch.setitem(config, "patch_size", [8, 8, 8])  # tiny fine patches make that ROI "oversized"
    planned = list(config["spacing"])
    used = _record_fine_export_spacing(monkeypatch, fine)
    result = predict_two_stage(coarse, fine, image, props, [Prompt("liver", 1)])
    info = result.summary["two_stage"]
    assert info["memory_guard"]
    assert all(g >= p for g, p in zip(info["stage2_spacing"], planned)) and info["stage2_spacing"] != planned
    assert used["spacing"] == info["stage2_spacing"]      # the export resampled from the guarded grid
    assert config["spacing"] == planned                   # and the model's plans are untouched afterwards
    assert result.label_map.shape == image.shape[1:]


def test_predict_command_two_stage_and_dynamic_spacing(preprocessed_phantom, smoke_model, tmp_path):
    """The command-line path: --two_stage finds the coarse configuration next to the fine model (here the smoke
    model stands in for both), --dynamic_spacing resamples per case; outputs keep the image geometry."""
    model = ["-d", str(PHANTOM_ID), "-c", "3d_fullres", "-f", "0", "-tr", "MedalSTrainer_smoke", "-p",
             "MedalSPlansCPU", "-device", "cpu"]
    coarse = smoke_model["dir"].with_name(smoke_model["dir"].name.replace("3d_fullres", "3d_lowres"))
    if not coarse.exists():
        shutil.copytree(smoke_model["dir"], coarse)
    inp = tmp_path / "in"
    inp.mkdir()
    first = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    shutil.copy(first, inp / first.name)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"text": "spleen", "label": 5},
                                               {"text": "lymph node", "label": 6, "instance": True}]}))
    out = tmp_path / "out"
    run(["nnUNetv2_predict_medals", *model, "-i", str(inp), "-o", str(out), "-prompts", str(prompts),
         "--two_stage", "3d_lowres", "--roi_scale", "1.3", "--dynamic_spacing", "0.5"], smoke_model["env"])
    summary = json.loads((out / "phantom_ts_000.json").read_text())
    assert set(summary["two_stage"]) >= {"roi", "fallback", "memory_guard", "stage2_spacing", "stage1_s"}
    seg = sitk.ReadImage(str(out / "phantom_ts_000.nii.gz"))
    assert seg.GetSize() == sitk.ReadImage(str(inp / "phantom_ts_000_0000.nii.gz")).GetSize()
    # a missing coarse model is one clear error
    proc = run(["nnUNetv2_predict_medals", *model, "-i", str(inp), "-o", str(tmp_path / "o2"), "-prompts",
                str(prompts), "--two_stage", "3d_nope"], smoke_model["env"], check=False)
    assert proc.returncode != 0 and "3d_nope" in proc.stderr + proc.stdout


def test_stage_two_takes_each_voxel_from_the_pass_that_hid_its_stage_one_prompt(stages, monkeypatch):
    """Stage-1 masks are a prediction: stage 2 runs twice with complementary block halves of them as prompts and
    combines P1·M_c + P2·M on the network grid (Algorithm 2's rule), so it cannot copy stage 1's false positives."""
    coarse, fine, image, props = stages
    _force_stage_one_box(monkeypatch, coarse, image.shape[1:])
    passes = []

    def probabilities(data, spatial):
        passes.append(None if spatial is None else spatial.clone())
        value = 0.2 if len(passes) == 1 else 0.9       # pass 1 (prompts on M) says 0.2, pass 2 (on M_c) 0.9
        return torch.full((1, *data.shape[1:]), value)

    monkeypatch.setattr(fine, "_probabilities", probabilities)
    grid = {}
    original = predictor_module.export_prediction

    def record(probs, *args, **kwargs):
        grid["probs"] = probs.clone()
        return original(probs, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "export_prediction", record)
    predict_two_stage(coarse, fine, image, props, [Prompt("liver", 1)])
    assert len(passes) == 2 and all(p is not None for p in passes)
    first, second = (p[0] > 0 for p in passes)
    assert first.any() and second.any() and not (first & second).any()   # complementary halves of one prompt
    probs = grid["probs"][0]
    assert torch.all(probs[first] == 0.9) and torch.all(probs[second] == 0.2)
    assert sorted(probs.unique().tolist()) == pytest.approx([0.2, 0.9])
    assert fine._probabilities is probabilities                           # the predictor is left as it was


def test_memory_guard_is_a_floor_for_dynamic_spacing(stages, monkeypatch):
    """--dynamic_spacing may zoom up to 2x finer than the spacing it starts from; on an oversized ROI it must not
    undo the memory guard (it used to take the guarded spacing as its starting point and halve it again)."""
    coarse, fine, image, props = stages
    _force_stage_one(monkeypatch, coarse, np.ones(image.shape[1:], np.uint16))   # the ROI is the whole image
    config = fine.configuration_manager.configuration
    monkeypatch.setitem(config, "patch_size", [8, 8, 8])
    planned = [float(s) for s in config["spacing"]]
    # a finer image (half the spacing) and a small structure: the dynamic rule zooms in below the plans' spacing
    # (here (3.33, 3.57, 3.57) against planned (6.65, 4.76, 4.76) and a guard floor of (6.65, 7.88, 10.51); the old
    # code ran stage 2 at (3.33, 3.94, 5.26), half the guard's spacing on every axis: 8x its voxels)
    fine_props = {**props, "spacing": [s / 2 for s in props["spacing"]]}
    transpose = fine.plans_manager.transpose_forward
    extent = [image.shape[1:][i] * fine_props["spacing"][i] for i in transpose]
    guard_floor, triggered = memory_guard(planned, extent, [8, 8, 8])
    assert triggered
    fine.dynamic_alpha = 0.5
    dynamic = fine.case_spacing(fine_props["spacing"], [Prompt("lymph node", 1)])
    assert all(d < p for d, p in zip(dynamic, planned))
    used = _record_fine_export_spacing(monkeypatch, fine)
    result = predict_two_stage(coarse, fine, image, fine_props, [Prompt("lymph node", 1)])
    info = result.summary["two_stage"]
    assert info["memory_guard"]
    assert used["spacing"] == pytest.approx(info["stage2_spacing"])
    assert all(u >= g - 1e-9 for u, g in zip(used["spacing"], guard_floor)), (used["spacing"], guard_floor)
    assert fine.dynamic_alpha == 0.5 and config["spacing"] == planned


def test_fallback_result_carries_the_readers_properties_and_can_be_written(stages, monkeypatch, tmp_path):
    coarse, fine, image, props = stages
    assert "sitk_stuff" in props
    _force_stage_one(monkeypatch, coarse, np.zeros(image.shape[1:], np.uint16))
    result = predict_two_stage(coarse, fine, image, props, [Prompt("liver", 1)], source="case.nii.gz")
    assert result.summary["two_stage"]["fallback"]
    assert result.properties["sitk_stuff"] == props["sitk_stuff"] and result.properties["source"] == "case.nii.gz"
    fine.write(result, str(tmp_path / "case"))
    written = sitk.ReadImage(str(tmp_path / "case.nii.gz"))
    assert written.GetSize() == tuple(reversed(image.shape[1:]))
    assert written.GetSpacing() == pytest.approx(tuple(reversed(props["spacing"])))


def test_refinement_runs_on_stage_two_after_its_complementary_pass(stages, monkeypatch):
    """--refine T with two stages: stage 2's complementary pass on stage 1's masks, then T rounds of Algorithm 2 on
    its binarised result (2 + 2T fine passes)."""
    coarse, fine, image, props = stages
    _force_stage_one_box(monkeypatch, coarse, image.shape[1:])
    passes = []

    def probabilities(data, spatial):
        passes.append(spatial.clone())
        return torch.where(spatial > 0, 0.2, 0.9)          # 0.9 where the prompt is hidden

    monkeypatch.setattr(fine, "_probabilities", probabilities)
    monkeypatch.setattr(fine, "refinement_rounds", 1)
    predict_two_stage(coarse, fine, image, props, [Prompt("liver", 1)])
    assert len(passes) == 4
    stage_two = (passes[0] + passes[1])[0] > 0                    # stage 1's masks on the ROI grid
    refined_prompt = (passes[2] + passes[3])[0]
    assert stage_two.any() and not (passes[2].bool() & passes[3].bool()).any()
    # the complementary pass answered 0.9 everywhere, so refinement is prompted with the whole grid, split in halves
    assert torch.all(refined_prompt == 1) and passes[2].any() and passes[3].any()
