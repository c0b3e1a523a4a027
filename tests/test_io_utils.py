"""Outputs kept apart from inputs; user npz files read without running pickled code (issue #19)."""
import os

import numpy as np
import pytest

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import read_npz, refuse_output_inside_input


def test_output_equal_to_or_inside_an_input_is_refused(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for out in (inp, inp / "sub" / "deeper", tmp_path / "in" / ".." / "in"):
        with pytest.raises(MedalSInputError, match="field '-o': is (the same folder as|inside) the input -i"):
            refuse_output_inside_input(out, {"-i": inp})
    refuse_output_inside_input(tmp_path / "out", {"-i": inp})
    refuse_output_inside_input(tmp_path / "in_out", {"-i": inp})  # a sibling sharing a prefix is fine


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "case.npz"
    np.savez(path, imgs=np.zeros((2, 3, 4)), text_prompts=np.array(_RunsCode(marker), dtype=object))
    with pytest.raises(MedalSInputError, match="case.npz: field 'text_prompts': not loaded: refusing to load "
                                               ".*system"):
        read_npz(path, ("imgs",), "text_prompts")
    assert not marker.exists()


def test_plain_prompt_dicts_and_arrays_load(tmp_path):
    path = tmp_path / "case.npz"
    prompts = {"1": "liver", "2": ["left kidney", "kidney (left)"], "instance_label": np.int64(0)}
    np.savez(path, imgs=np.ones((2, 3, 4)), spacing=np.array([1.0, 2.0, 3.0]),
             text_prompts=np.array(prompts, dtype=object))
    out = read_npz(path, ("imgs", "spacing"), "text_prompts")
    assert out["text_prompts"] == prompts and out["imgs"].shape == (2, 3, 4)


@pytest.mark.parametrize("problem", ["truncated", "missing_key", "object_array_of_other_things"])
def test_damaged_or_unexpected_npz_files_are_one_error(tmp_path, problem):
    path = tmp_path / "case.npz"
    np.savez_compressed(path, imgs=np.ones((2, 3, 4)),
                        text_prompts=np.array({"1": "liver"} if problem != "object_array_of_other_things"
                                              else {"1": {1, 2}}, dtype=object))
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    keys = ("imgs", "spacing") if problem == "missing_key" else ("imgs",)
    with pytest.raises(MedalSInputError, match="case.npz"):
        read_npz(path, keys, "text_prompts")
