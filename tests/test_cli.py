"""``nnunetv2_medals`` verbs: ordinary mistakes are one line on stderr, real bugs keep their traceback, and
``MEDALS_DEBUG=1`` shows the traceback of ours too (issue #19)."""
import json
import os

import numpy as np
import pytest

from tests.helpers import run


def _env(tmp_path, **extra):
    return {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
            "nnUNet_results": str(tmp_path / "res"), **extra}


def _npz_folder(tmp_path):
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez_compressed(folder / "CT_case.npz", imgs=np.zeros((8, 9, 10), np.float32), spacing=np.ones(3),
                        text_prompts=np.array({"1": "spleen", "instance_label": 0}, dtype=object))
    return folder


@pytest.mark.parametrize("verb", ["phantom_n0", "tolerance", "refine", "fold", "device", "missing_input"])
def test_ordinary_mistakes_are_one_line(tmp_path, verb):
    model = tmp_path / "T__P__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    npz = _npz_folder(tmp_path)
    predict = ["predict-npz", "-i", str(npz), "-o", str(tmp_path / "out"), "-m", str(model)]
    if verb == "phantom_n0":
        cmd, expected = ["phantom", "-d", "950", "-n", "0"], "field '-n': needs at least 1 training case"
    elif verb == "tolerance":
        (tmp_path / "p.json").write_text(json.dumps({"1": "spleen"}))
        cmd = ["evaluate", "-ref", str(npz), "-pred", str(tmp_path / "pred"), "-prompts", str(tmp_path / "p.json"),
               "-o", str(tmp_path / "eval"), "--tolerance", "-5"]
        expected = "field '--tolerance': the NSD tolerance is a distance in mm above 0"
    elif verb == "refine":
        cmd, expected = predict + ["--refine", "-3"], "field '--refine': needs 0 or more rounds"
    elif verb == "fold":
        cmd, expected = predict + ["-f", "3"], "field 'checkpoint_final.pth': not found in fold_3"
    elif verb == "device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        cmd, expected = predict + ["-device", "cuda"], "field '-device': cuda was asked for"
    else:
        cmd, expected = ["predict-npz", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "-m",
                         str(model)], "field '-i': is not a folder"
    proc = run(["nnunetv2_medals", *cmd], _env(tmp_path), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and expected in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "raw").exists()


def test_debug_switch_shows_the_traceback(tmp_path):
    proc = run(["nnunetv2_medals", "phantom", "-d", "950", "-n", "0"], _env(tmp_path, MEDALS_DEBUG="1"), check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "MedalSInputError" in proc.stderr
