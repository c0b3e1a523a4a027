"""The command line against a hostile-but-realistic user (issue #19): bad files, bad folders, bad prompts, crafted
npz files and killed runs. Every refusal is one line on stderr (no traceback, exit code != 0) naming the file or
flag, and no input changes by a byte."""
import hashlib
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers import BIN, PHANTOM_ID, run

MODEL = ["-d", str(PHANTOM_ID), "-c", "3d_fullres", "-f", "0", "-tr", "MedalSTrainer_smoke", "-p", "MedalSPlansCPU",
         "-device", "cpu"]
PROMPTS = {"prompts": [{"text": "spleen", "label": 1}, {"text": "lymph node", "label": 3, "instance": True}]}


def _digest(*folders):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _one_line_error(proc, *words):
    """Exit code != 0, no traceback, the last stderr line is ``error: …`` holding ``words``."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    for w in words:
        assert w in last, last
    return last


@pytest.fixture
def case_folder(preprocessed_phantom, tmp_path):
    """One test case (``phantom_ts_000``) in its own input folder, its label map beside it for mask prompts."""
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(preprocessed_phantom["raw"] / "imagesTs" / "phantom_ts_000_0000.nii.gz", inp)
    shutil.copy(preprocessed_phantom["raw"] / "labelsTs" / "phantom_ts_000.nii.gz", tmp_path / "label.nii.gz")
    return inp


def _predict(smoke_model, inp, out, prompts, *extra):
    return run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts), *extra],
               smoke_model["env"], check=False)


def test_same_input_and_output_folder_is_refused_by_every_writer(smoke_model, case_folder, tmp_path):
    prompts = _write(tmp_path / "prompts.json", PROMPTS)
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    np.savez_compressed(npz_dir / "CT_case.npz", imgs=np.zeros((8, 9, 10), np.float32), spacing=np.ones(3),
                        text_prompts=np.array({"1": "spleen", "instance_label": 0}, dtype=object))
    before = _digest(case_folder, npz_dir)
    for out in (case_folder, case_folder / "out"):
        _one_line_error(_predict(smoke_model, case_folder, out, prompts), "'-o'", "-i")
    _one_line_error(run(["nnunetv2_medals", "predict-npz", "-i", str(npz_dir), "-o", str(npz_dir), "-m",
                         str(smoke_model["dir"])], smoke_model["env"], check=False), "'-o'", "same folder")
    _one_line_error(run(["nnunetv2_medals", "evaluate", "-ref", str(case_folder), "-pred", str(npz_dir), "-prompts",
                         str(prompts), "-o", str(npz_dir / "eval")], smoke_model["env"], check=False), "inside")
    assert _digest(case_folder, npz_dir) == before
    assert not (case_folder / "out").exists()


def _damage(problem, inp, tmp_path, obj):
    image_file = inp / "phantom_ts_000_0000.nii.gz"
    if problem == "truncated":
        data = image_file.read_bytes()
        image_file.write_bytes(data[:int(len(data) * 0.7)])
        return "phantom_ts_000_0000.nii.gz", "truncated"
    if problem == "nan":
        image = sitk.ReadImage(str(image_file))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array[3, 10, 10], array[4, 11, 12] = np.nan, np.inf
        damaged = sitk.GetImageFromArray(array)
        damaged.CopyInformation(image)
        sitk.WriteImage(damaged, str(image_file))
        return "phantom_ts_000_0000.nii.gz", "2 NaN or infinite"
    if problem == "2d":
        image_file.unlink()
        flat = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32))
        sitk.WriteImage(flat, str(inp / "flat_0000.nii.gz"))
        return "flat_0000.nii.gz", "2D image"
    if problem == "extra_channel":
        shutil.copy(image_file, inp / "phantom_ts_000_0001.nii.gz")
        return "channels", "the model expects 1 channel (_0000); phantom_ts_000 has 2"
    if problem == "whitespace_prompt":
        obj["prompts"][0]["text"] = "   "
        return "prompts[0].text", "holds no letters"
    mask = sitk.ReadImage(str(tmp_path / "label.nii.gz")) == 5
    if problem == "mask_origin":
        mask.SetOrigin([o + 20.0 for o in mask.GetOrigin()])
    else:
        mask.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(mask, str(tmp_path / "hint.nii.gz"))
    obj["prompts"][0]["mask"] = "hint.nii.gz"
    return "hint.nii.gz", problem.split("_")[1]


@pytest.mark.parametrize("problem", ["truncated", "nan", "2d", "extra_channel", "whitespace_prompt", "mask_origin",
                                     "mask_direction"])
def test_bad_input_is_one_line_naming_the_file_and_nothing_changes(smoke_model, case_folder, tmp_path, problem):
    obj = json.loads(json.dumps(PROMPTS))
    names = _damage(problem, case_folder, tmp_path, obj)
    prompts = _write(tmp_path / "prompts.json", obj)
    before = _digest(case_folder, *(p for p in [tmp_path / "hint.nii.gz"] if p.exists()))
    out = tmp_path / "out"
    _one_line_error(_predict(smoke_model, case_folder, out, prompts), *names)
    assert _digest(case_folder, *(p for p in [tmp_path / "hint.nii.gz"] if p.exists())) == before
    assert not list(out.glob("*.json")) if out.exists() else True


def _challenge_npz(path, imgs, text_prompts):
    np.savez_compressed(path, imgs=imgs, spacing=np.array([4.5, 4.5, 7.0]), text_prompts=text_prompts)


class _RunsCode:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("problem", ["pickle_runs_code", "2d", "4d", "truncated"])
def test_predict_npz_refuses_crafted_and_malformed_files(smoke_model, tmp_path, problem):
    inp = tmp_path / "npz"
    inp.mkdir()
    marker = tmp_path / "PWNED"
    path = inp / "CT_case.npz"
    prompts = np.array({"1": "spleen", "instance_label": 0}, dtype=object)
    imgs = np.random.default_rng(0).normal(size=(16, 20, 24)).astype(np.float32)
    if problem == "pickle_runs_code":
        _challenge_npz(path, imgs, np.array(_RunsCode(marker), dtype=object))
        words = ("text_prompts", "never run")
    elif problem == "truncated":
        _challenge_npz(path, imgs, prompts)
        path.write_bytes(path.read_bytes()[:-200])
        words = ("CT_case.npz", "damaged or truncated")
    else:
        _challenge_npz(path, imgs[0] if problem == "2d" else imgs[None], prompts)
        words = ("CT_case.npz", "'imgs'", "(D, H, W)")
    before = _digest(inp)
    proc = run(["nnunetv2_medals", "predict-npz", "-i", str(inp), "-o", str(tmp_path / "out"), "-m",
                str(smoke_model["dir"])], smoke_model["env"], check=False)
    _one_line_error(proc, *words)
    assert not marker.exists()
    assert _digest(inp) == before


def _consistent(out, case, labels, instance_label, probabilities):
    """A case is complete (JSON) and its files agree with it: voxel counts, instance map, probabilities."""
    summary = json.loads((out / f"{case}.json").read_text())
    label_map = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
    assert [p["label"] for p in summary["prompts"]] == labels
    for p in summary["prompts"]:
        assert p["voxels"] == int((label_map == p["label"]).sum())
    instances = out / f"{case}_instances_label{instance_label}.nii.gz"
    assert instances.is_file() == (instance_label is not None)
    if instance_label is not None:
        numbered = sitk.GetArrayFromImage(sitk.ReadImage(str(instances)))
        assert np.array_equal(numbered > 0, label_map == instance_label)
        assert summary["min_instance_volume_mm3"] > 0
    if probabilities:
        with np.load(out / f"{case}_probabilities.npz") as npz:
            assert npz["labels"].tolist() == labels
    else:
        assert not (out / f"{case}_probabilities.npz").exists()


def test_killed_run_continues_to_complete_consistent_cases(preprocessed_phantom, smoke_model, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    cases = ["phantom_tr_000", "phantom_tr_001", "phantom_tr_002"]
    for case in cases:
        shutil.copy(preprocessed_phantom["raw"] / "imagesTr" / f"{case}_0000.nii.gz", inp)
    prompts = _write(tmp_path / "prompts.json", PROMPTS)
    before = _digest(inp)
    out = tmp_path / "out"
    cmd = [str(BIN / "nnUNetv2_predict_medals"), *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts),
           "--save_probabilities"]
    proc = subprocess.Popen(cmd, env=smoke_model["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(
            (out / f"{c}.nii.gz").exists() for c in cases):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    # a killed writer leaves temporary files; one more stands in for a kill in the middle of writing
    out.mkdir(exist_ok=True)
    (out / ".tmp_4242_phantom_tr_002_probabilities.npz").write_bytes(b"partial")
    complete = {c: (out / f"{c}.json").stat().st_mtime_ns for c in cases if (out / f"{c}.json").exists()}

    resumed = run(cmd + ["--continue_prediction"], smoke_model["env"])
    for case in cases:
        _consistent(out, case, [1, 3], 3, probabilities=True)
    for case, mtime in complete.items():
        assert f"{case}: complete with these prompts, skipped" in resumed.stdout
        assert (out / f"{case}.json").stat().st_mtime_ns == mtime
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]

    # other prompts into the same folder: the earlier instance maps and probabilities go with the earlier run
    other = _write(tmp_path / "other.json", {"prompts": [{"text": "liver", "label": 2}]})
    again = run(cmd[:-2] + [str(other), "--continue_prediction"], smoke_model["env"])
    assert "skipped" not in again.stdout
    for case in cases:
        _consistent(out, case, [2], None, probabilities=False)
    assert _digest(inp) == before
