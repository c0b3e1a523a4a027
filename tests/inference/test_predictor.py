"""The MedalSPredictor session on a smoke model: prompting modes, memory fallback, the session verbs, refusals,
dynamic resampling."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.text_prompts.encoder import default_encoder_dir
from nnunetv2_medals.text_prompts.prompt_file import Prompt


def test_parallel_sequential_and_chunked_prompting_agree(preprocessed_phantom, smoke_model):
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    prompts = [Prompt(t, i + 1) for i, t in enumerate(["liver", "spleen", "left kidney", "lymph node", "kidneys"])]
    results = {}
    for mode, kwargs in {"parallel": {}, "sequential": {"sequential": True},
                         "chunked": {"max_prompts_per_forward": 2}}.items():
        predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), **kwargs)
        data, props, masks = predictor.preprocess_case(image, prompts)
        results[mode] = predictor.predict_preprocessed(data, props, prompts, masks).probabilities
    assert_probabilities_agree(results["sequential"], results["parallel"])
    assert_probabilities_agree(results["chunked"], results["parallel"])


def assert_probabilities_agree(a, b):
    """Batched and one-by-one forwards sum in another order, and the export stores float16 after resampling: a few
    voxels in a million differ by ~2e-3. Any real mix-up of prompts would move whole structures."""
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    assert np.quantile(diff, 0.9999) <= 2e-3
    assert diff.max() <= 1e-2


def test_out_of_memory_falls_back_to_prompt_chunks(preprocessed_phantom, smoke_model, monkeypatch):
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    prompts = [Prompt(t, i + 1) for i, t in enumerate(["liver", "spleen", "left kidney", "lymph node", "kidneys"])]
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    data, props, _ = predictor.preprocess_case(image, prompts)
    reference = predictor.predict_preprocessed(data, props, prompts).probabilities
    original = type(predictor.network).forward_prompts

    def limited(net, skips, features, text=None, *args, **kwargs):
        if text.shape[1] > 2:
            raise torch.OutOfMemoryError("simulated")
        return original(net, skips, features, text, *args, **kwargs)

    monkeypatch.setattr(type(predictor.network), "forward_prompts", limited)
    chunked = predictor.predict_preprocessed(data, props, prompts).probabilities
    assert predictor.max_prompts_per_forward == 2
    assert_probabilities_agree(chunked, reference)


def test_session_api_with_a_mask_prompt(preprocessed_phantom, smoke_model):
    image = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    label = preprocessed_phantom["raw"] / "labelsTs" / image.name.replace("_0000", "")
    session = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    session.set_image([str(image)])
    session.add_text_prompt("spleen", 1, mask=str(label))
    session.add_text_prompt("liver", 2)
    result = session.predict()
    assert result.label_map.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
    assert result.probabilities.shape == (2, *result.label_map.shape)
    assert [p["text"] for p in result.summary["prompts"]] == ["spleen", "liver"]


def test_a_different_text_encoder_is_refused(smoke_model, tmp_path):
    other = tmp_path / "other_encoder"
    shutil.copytree(default_encoder_dir(), other)
    (other / "config.json").write_text((other / "config.json").read_text().replace("0.02", "0.05"))
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), encoder=str(other))
    predictor.embed(["liver"])  # trained phrasing: comes from the checkpoint, no encoder needed
    with pytest.raises(MedalSInputError, match="was trained with"):
        predictor.embed(["a brand new phrasing"])


def test_nan_images_are_refused(preprocessed_phantom, smoke_model):
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    data, props, _ = predictor.preprocess_case(image, [Prompt("liver", 1)])
    data[0, 0, 0, 0] = float("nan")
    with pytest.raises(MedalSInputError, match="NaN"):
        predictor.predict_preprocessed(data, props, [Prompt("liver", 1)])


def test_dynamic_spacing_follows_the_smallest_prompted_structure(smoke_model):
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), dynamic_alpha=0.5)
    planned = [float(s) for s in predictor.configuration_manager.spacing]
    extents = predictor.vocabulary.target_extent_mm
    fine_image = [s / 4 for s in planned]
    node = predictor.case_spacing(fine_image, [Prompt("lymph node", 1)])
    liver = predictor.case_spacing(fine_image, [Prompt("liver", 1)])
    both = predictor.case_spacing(fine_image, [Prompt("liver", 1), Prompt("enlarged lymph nodes", 2)])
    assert both == node                                  # the smallest structure decides
    assert all(n <= p for n, p in zip(node, planned)) and node != planned
    assert np.prod(node) < np.prod(liver)
    assert predictor.prompt_extents(["lymph node"])[0].tolist() == extents["lymph node"]
    # an unrelated prompt has no known size and leaves the plans' spacing
    assert predictor.case_spacing(fine_image, [Prompt("qwertyuiop zxcvbnm", 1)]) == planned
    predictor.dynamic_alpha = None
    assert predictor.case_spacing(fine_image, [Prompt("lymph node", 1)]) == planned


def test_refinement_starts_from_the_users_mask_prompts(preprocessed_phantom, smoke_model, tmp_path):
    """Algorithm 2 in hybrid mode: the initial prompt S_p is the user's mask, the first pass sees it whole, and each
    refinement round feeds the binarised prediction back through two complementary block halves (each voxel taken
    from the pass that hid it). The network is replaced by a fixed answer, so only the passes are under test."""
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    labels = sitk.ReadImage(str(preprocessed_phantom["raw"] / "labelsTs" / image[0].split("/")[-1].replace("_0000", "")))
    spleen = sitk.GetArrayFromImage(labels) == 5
    assert spleen.any()
    mask = sitk.GetImageFromArray(spleen.astype(np.uint8))
    mask.CopyInformation(labels)
    sitk.WriteImage(mask, str(tmp_path / "spleen_mask.nii.gz"))
    prompts = [Prompt("spleen", 1, mask=str(tmp_path / "spleen_mask.nii.gz")), Prompt("liver", 2)]
    calls = {}
    for rounds in (0, 1):
        predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), refinement_rounds=rounds)
        data, props, masks = predictor.preprocess_case(image, prompts)
        assert masks[0].any() and not masks[1].any()
        # first pass: the prompt's own mask back, a little shrunk in value (0.8 inside, 0.1 outside); refinement
        # passes: 0.3 where a prompt was given, 0.7 where it was hidden
        seen = []

        def answer(data_, spatial, seen=seen):
            seen.append(spatial.clone())
            if len(seen) == 1:
                return torch.where(spatial > 0, 0.8, 0.1)
            return torch.where(spatial > 0, 0.3, 0.7)

        predictor._probabilities = answer
        calls[rounds] = (seen, predictor.predict_preprocessed(data, props, prompts, masks))
    assert len(calls[0][0]) == 1 and len(calls[1][0]) == 3
    first, half, other_half = calls[1][0]
    assert torch.equal(first, masks.to(first.dtype))
    fed_back = (torch.where(first > 0, 0.8, 0.1) >= 0.5).float()       # = the spleen mask; liver empty
    assert half[0].any() and other_half[0].any()
    assert torch.equal(half + other_half, fed_back) and not (half.bool() & other_half.bool()).any()
    # every voxel of the fed-back prompt comes from the pass that hid it (0.7), never from the one that saw it (0.3)
    unrefined, refined = (calls[r][1].probabilities[0].astype(np.float32) for r in (0, 1))
    inside = unrefined > 0.5
    assert inside.any() and np.allclose(refined[inside], 0.7, atol=1e-2)
