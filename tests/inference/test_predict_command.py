"""nnUNetv2_predict_medals and the Python API on a smoke model: contracts, bad input, atomic outputs."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import PHANTOM_ID, run

MODEL = ["-d", str(PHANTOM_ID), "-c", "3d_fullres", "-f", "0", "-tr", "MedalSTrainer_smoke", "-p", "MedalSPlansCPU",
         "-device", "cpu"]


def _inputs(preprocessed_phantom, tmp_path, n=1):
    src = preprocessed_phantom["raw"] / "imagesTs"
    dst = tmp_path / "in"
    dst.mkdir()
    for f in sorted(src.iterdir())[:n]:
        shutil.copy(f, dst / f.name)
    return dst


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _prompt_file(tmp_path, obj, name="prompts.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_outputs_hold_exactly_the_prompt_labels_and_inputs_stay_untouched(preprocessed_phantom, smoke_model,
                                                                          tmp_path):
    inp = _inputs(preprocessed_phantom, tmp_path, n=2)
    prompts = _prompt_file(tmp_path, {"prompts": [{"text": "spleen", "label": 11},
                                                  {"text": "the kidney on the left side", "label": 22},
                                                  {"text": "lymph node", "label": 33, "instance": True}]})
    before = _digest(inp), prompts.read_bytes()
    out = tmp_path / "out"
    proc = run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts),
                "--overlay"], smoke_model["env"])
    assert "phantom_ts_000:" in proc.stdout
    assert (out / "phantom_ts_000_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (_digest(inp), prompts.read_bytes()) == before
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".tmp")]
    for case in ("phantom_ts_000", "phantom_ts_001"):
        seg = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        assert seg.GetSize() == image.GetSize() and np.allclose(seg.GetSpacing(), image.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 11, 22, 33}
        summary = json.loads((out / f"{case}.json").read_text())
        assert [p["label"] for p in summary["prompts"]] == [11, 22, 33]
        assert (out / f"{case}_instances_label33.nii.gz").is_file()


def test_parallel_sequential_and_chunked_prompting_agree(preprocessed_phantom, smoke_model):
    from nnunetv2_medals.inference.predictor import load_model
    from nnunetv2_medals.text_prompts.prompt_file import Prompt

    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    prompts = [Prompt(t, i + 1) for i, t in enumerate(["liver", "spleen", "left kidney", "lymph node", "kidneys"])]
    results = {}
    for mode, kwargs in {"parallel": {}, "sequential": {"sequential": True},
                         "chunked": {"max_prompts_per_forward": 2}}.items():
        predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), **kwargs)
        data, props, masks = predictor.preprocess_case(image, prompts)
        results[mode] = predictor.predict_preprocessed(data, props, prompts, masks).probabilities
    np.testing.assert_allclose(results["sequential"], results["parallel"], atol=2e-3)
    np.testing.assert_allclose(results["chunked"], results["parallel"], atol=2e-3)


def test_export_a_prompt_at_a_time_equals_nnunets_export_of_all(preprocessed_phantom, smoke_model):
    """The image-geometry export runs a few prompts at a time (memory); it must equal nnU-Net's export of all."""
    from nnunetv2.inference.export_prediction import \
        convert_predicted_logits_to_segmentation_with_correct_shape as export

    from nnunetv2_medals.inference.predictor import load_model, prompt_label_manager
    from nnunetv2_medals.postprocessing import probabilities_to_label_map

    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    data, props, _ = predictor.preprocess_case(image, [])
    labels = [3, 1, 7, 2]
    predictor._text = predictor.embed(["liver", "spleen", "left kidney", "kidneys"])
    predictor._n_image_channels = data.shape[0]
    predictor.label_manager = prompt_label_manager(labels)
    probs = predictor._probabilities(torch.from_numpy(data) if isinstance(data, np.ndarray) else data, None)
    predictor.export_voxel_budget = 1  # one prompt per export
    chunked, label_map = predictor._to_image_geometry(probs, props, labels)
    _, whole = export(torch.logit(probs.clamp(1e-6, 1 - 1e-6)), predictor.plans_manager,
                      predictor.configuration_manager, prompt_label_manager(labels), props, return_probabilities=True)
    assert chunked.dtype == np.float16 and chunked.shape == whole.shape
    np.testing.assert_allclose(chunked.astype(np.float32), whole, atol=1e-3)
    expected = probabilities_to_label_map(whole, labels)
    assert (label_map != expected).mean() < 1e-4   # float16 ties at exactly 0.5 may differ, nothing else
    assert set(np.unique(label_map)) <= {0, *labels}


def test_out_of_memory_falls_back_to_prompt_chunks(preprocessed_phantom, smoke_model, monkeypatch):
    from nnunetv2_medals.inference.predictor import load_model
    from nnunetv2_medals.text_prompts.prompt_file import Prompt

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
    np.testing.assert_allclose(chunked, reference, atol=2e-3)


def test_session_api_with_a_mask_prompt(preprocessed_phantom, smoke_model):
    from nnunetv2_medals.inference.predictor import load_model

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


@pytest.mark.parametrize("problem", ["mask_shape", "unknown_case", "duplicate_label", "no_prompts"])
def test_bad_input_is_one_clear_error_and_writes_nothing(preprocessed_phantom, smoke_model, tmp_path, problem):
    inp = _inputs(preprocessed_phantom, tmp_path)
    obj = {"prompts": [{"text": "spleen", "label": 1}]}
    expected = ""
    if problem == "mask_shape":
        small = sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8))
        sitk.WriteImage(small, str(tmp_path / "hint.nii.gz"))
        obj["prompts"][0]["mask"] = "hint.nii.gz"
        expected = "hint.nii.gz: field 'prompts[0].mask': shape"
    elif problem == "unknown_case":
        obj["cases"] = {"case_nope": {"prompts": [{"text": "liver", "label": 2}]}}
        expected = "field 'cases.case_nope': no such case"
    elif problem == "duplicate_label":
        obj["prompts"].append({"text": "liver", "label": 1})
        expected = "field 'prompts[1].label': duplicate label value 1"
    else:
        obj = {"prompts": []}
        expected = "field 'prompts'"
    prompts = _prompt_file(tmp_path, obj)
    out = tmp_path / "out"
    proc = run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts)],
               smoke_model["env"], check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("error:") == 1
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix in (".gz", ".json", ".npz")
                                    and p.name not in ("dataset.json", "plans.json",
                                                       "predict_from_raw_data_args.json")]


def test_a_different_text_encoder_is_refused(smoke_model, tmp_path):
    from nnunetv2_medals.errors import MedalSInputError
    from nnunetv2_medals.inference.predictor import load_model
    from nnunetv2_medals.text_prompts.encoder import default_encoder_dir

    other = tmp_path / "other_encoder"
    shutil.copytree(default_encoder_dir(), other)
    (other / "config.json").write_text((other / "config.json").read_text().replace("0.02", "0.05"))
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), encoder=str(other))
    predictor.embed(["liver"])  # trained phrasing: comes from the checkpoint, no encoder needed
    with pytest.raises(MedalSInputError, match="was trained with"):
        predictor.embed(["a brand new phrasing"])


def test_nan_images_are_refused(preprocessed_phantom, smoke_model):
    from nnunetv2_medals.errors import MedalSInputError
    from nnunetv2_medals.inference.predictor import load_model
    from nnunetv2_medals.text_prompts.prompt_file import Prompt

    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    data, props, _ = predictor.preprocess_case(image, [Prompt("liver", 1)])
    data[0, 0, 0, 0] = float("nan")
    with pytest.raises(MedalSInputError, match="NaN"):
        predictor.predict_preprocessed(data, props, [Prompt("liver", 1)])


@pytest.mark.parametrize("instance_label", [0, 1])
def test_challenge_npz_contract(preprocessed_phantom, smoke_model, tmp_path, instance_label):
    image_file = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    img = sitk.ReadImage(str(image_file))
    arr = sitk.GetArrayFromImage(img)
    scaled = np.clip((arr + 160) / 400 * 255, 0, 255).astype(np.uint8)  # challenge images are 0-255
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    np.savez_compressed(inp / "CT_phantom_case.npz", imgs=scaled, spacing=np.array(img.GetSpacing()[::-1]),
                        text_prompts=np.array({"1": "liver", "2": "lymph node", "instance_label": instance_label},
                                              dtype=object))
    before = (inp / "CT_phantom_case.npz").read_bytes()
    proc = run(["nnunetv2_medals", "predict-npz", "-i", str(inp), "-o", str(out), "-m", str(smoke_model["dir"])],
               smoke_model["env"])
    assert "CT_phantom_case.npz" in proc.stdout
    segs = np.load(out / "CT_phantom_case.npz")["segs"]
    assert segs.shape == scaled.shape
    if not instance_label:
        assert set(np.unique(segs)) <= {0, 1, 2}
    assert (inp / "CT_phantom_case.npz").read_bytes() == before
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "x.npz", imgs=scaled)
    proc = run(["nnunetv2_medals", "predict-npz", "-i", str(bad), "-o", str(tmp_path / "o2"), "-m",
                str(smoke_model["dir"])], smoke_model["env"], check=False)
    assert proc.returncode != 0 and "x.npz: field 'spacing': missing" in proc.stderr
