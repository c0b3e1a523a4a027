"""nnUNetv2_predict_medals and predict-npz on a smoke model: contracts, bad input, atomic outputs."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers import PHANTOM_ID, run

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


@pytest.mark.parametrize("instance_label", [0, 1])
def test_challenge_npz_contract(preprocessed_phantom, smoke_model, tmp_path, instance_label):
    image_file = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    img = sitk.ReadImage(str(image_file))
    arr = sitk.GetArrayFromImage(img)
    scaled = np.clip((arr + 160) / 400 * 255, 0, 255).astype(np.uint8)  # challenge images are 0-255
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    # challenge order: spacing is SimpleITK's (x, y, z)
    np.savez_compressed(inp / "CT_phantom_case.npz", imgs=scaled, spacing=np.array(img.GetSpacing()),
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


@pytest.mark.parametrize("flags, expected", [
    (["--dynamic_spacing", "0"], "field '--dynamic_spacing': ALPHA"),
    (["--refine", "-3"], "field '--refine': needs 0 or more rounds"),
    (["--max_prompts_per_forward", "0"], "field '--max_prompts_per_forward': needs at least 1"),
    (["-d", "977"], "field '-d': no dataset '977'"),
    (["-f", "3"], "field 'checkpoint_final.pth': not found in fold_3"),
    (["-i", "MISSING"], "field '-i': is not a folder"),
    (["-device", "cuda"], "field '-device': cuda was asked for"),
])
def test_ordinary_mistakes_are_one_line_before_the_model_loads(preprocessed_phantom, smoke_model, tmp_path, flags,
                                                               expected):
    """Issue #19: each of these was a traceback (or, for --refine/--max_prompts_per_forward, silently accepted)."""
    import torch

    if flags[0] == "-device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    inp = _inputs(preprocessed_phantom, tmp_path)
    prompts = _prompt_file(tmp_path, {"prompts": [{"text": "spleen", "label": 1}]})
    args = {**dict(zip(MODEL[::2], MODEL[1::2])), "-i": str(inp), "-o": str(tmp_path / "out")}
    args.update({f: (str(tmp_path / v) if f == "-i" else v) for f, v in zip(flags[::2], flags[1::2])
                 if f in args})
    ours = [x for f, v in zip(flags[::2], flags[1::2]) if f not in args for x in (f, v)]
    proc = run(["nnUNetv2_predict_medals", *[x for kv in args.items() for x in kv], "-prompts", str(prompts), *ours],
               smoke_model["env"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and expected in proc.stderr, proc.stderr
    assert "Loading" not in proc.stdout and not (tmp_path / "out").exists()
