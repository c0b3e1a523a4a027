"""Left is left on any scan: one image in four voxel orders predicts the same world-space result; challenge npz
spacing lands on the right axes; prompts are matched to the model's vocabulary and reported."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIOWithReorient

from nnunetv2_medals import cli
from nnunetv2_medals.inference.predictor import MedalSPredictor
from tests.helpers import PHANTOM_ID, VOXEL_ORDERS, run, store_in_voxel_order

MODEL = ["-d", str(PHANTOM_ID), "-c", "3d_fullres", "-f", "0", "-tr", "MedalSTrainer_smoke", "-p", "MedalSPlansCPU",
         "-device", "cpu"]


def test_four_voxel_orders_give_one_world_space_answer(preprocessed_phantom, smoke_model, tmp_path):
    source = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    image = sitk.ReadImage(str(source))
    inp = tmp_path / "in"
    inp.mkdir()
    for order in VOXEL_ORDERS:
        sitk.WriteImage(store_in_voxel_order(image, order), str(inp / f"case{order}_0000.nii.gz"))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"text": "left kidney", "label": 1}, {"text": "spleen", "label": 2},
                                               {"text": "the kidney on the right side", "label": 3}]}))
    out = tmp_path / "out"
    run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts),
         "--save_probabilities"], smoke_model["env"])
    probabilities, world = {}, {}
    for order in VOXEL_ORDERS:
        stored = sitk.ReadImage(str(inp / f"case{order}_0000.nii.gz"))
        seg = sitk.ReadImage(str(out / f"case{order}.nii.gz"))
        # each output has its own input's geometry ...
        assert seg.GetSize() == stored.GetSize()
        assert np.allclose(seg.GetDirection(), stored.GetDirection())
        assert np.allclose(seg.GetOrigin(), stored.GetOrigin(), atol=1e-4)
        assert np.allclose(seg.GetSpacing(), stored.GetSpacing())
        # ... and in world space (every output brought to one voxel order) they are identical
        world[order] = sitk.GetArrayFromImage(sitk.DICOMOrient(seg, "LPS"))
        probabilities[order] = np.load(out / f"case{order}_probabilities.npz")["probabilities"]
    for order in VOXEL_ORDERS:
        assert np.array_equal(world[order], world["LPS"]), order
        # the network saw one and the same array (probabilities are in the canonical array order)
        assert np.array_equal(probabilities[order], probabilities["LPS"]), order
    assert probabilities["LPS"].astype(np.float32).std() > 0


def test_predict_npz_puts_challenge_spacing_on_the_right_axes(smoke_model, tmp_path, monkeypatch):
    """An npz with spacing (0.8, 0.8, 3.0) beside (16, 24, 24) arrays: the model sees exactly what nnU-Net's
    reorienting reader makes of the NIfTI the challenge's converter writes (slice thickness on the slice axis)."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (16, 24, 24)).astype(np.uint8)
    spacing = [0.8, 0.8, 3.0]
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    np.savez(inp / "CT_case.npz", imgs=imgs, spacing=np.array(spacing),
             text_prompts=np.array({"1": "liver", "instance_label": 0}, dtype=object))
    seen = []
    original = MedalSPredictor.predict_image

    def spy(self, image, properties, *args, **kwargs):
        seen.append((image.copy(), list(properties["spacing"])))
        result = original(self, image, properties, *args, **kwargs)
        # an asymmetric answer, so that segs written in the wrong voxel order cannot pass
        result.label_map = (np.arange(result.label_map.size).reshape(result.label_map.shape) % 3).astype(np.uint16)
        return result

    monkeypatch.setattr(MedalSPredictor, "predict_image", spy)
    cli.main(["predict-npz", "-i", str(inp), "-o", str(out), "-m", str(smoke_model["dir"])])
    challenge = sitk.GetImageFromArray(imgs)   # the challenge baseline's converter
    challenge.SetSpacing(spacing)
    sitk.WriteImage(challenge, str(tmp_path / "challenge.nii.gz"))
    expected, props = SimpleITKIOWithReorient().read_images([str(tmp_path / "challenge.nii.gz")])
    (image, seen_spacing), = seen
    assert np.allclose(seen_spacing, props["spacing"]) and np.allclose(seen_spacing, [3.0, 0.8, 0.8])
    assert np.array_equal(image, expected)
    segs = np.load(out / "CT_case.npz")["segs"]
    canonical = (np.arange(segs.size).reshape(image.shape[1:]) % 3).astype(np.uint16)
    # the npz is LPS voxel order (identity direction), the model's arrays RAS: y and x flipped back
    assert np.array_equal(segs, canonical[:, ::-1, ::-1])


def test_prompts_are_matched_and_reported(preprocessed_phantom, smoke_model, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    source = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    (inp / source.name).write_bytes(source.read_bytes())
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"text": "the left-sided kidney", "label": 1},
                                               {"text": "dexter kidney", "label": 2},
                                               {"text": "左肾", "label": 3}]}))
    out = tmp_path / "out"
    proc = run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(out), "-prompts", str(prompts)],
               smoke_model["env"])
    assert "warning: prompt '左肾' is far from everything the model was trained on" in proc.stdout
    summary = json.loads((out / "phantom_ts_000.json").read_text())
    left, right, foreign = (p["match"] for p in summary["prompts"])
    assert (left["target"], left["method"]) == ("left kidney", "canonical")
    assert (right["target"], right["method"]) == ("right kidney", "canonical")
    assert foreign["target"] is None and foreign["warning"] and foreign["cosine"] < 0.5
    raw = run(["nnUNetv2_predict_medals", *MODEL, "-i", str(inp), "-o", str(tmp_path / "raw"), "-prompts",
               str(prompts), "--raw_text"], smoke_model["env"])
    assert raw.returncode == 0
    raw_summary = json.loads((tmp_path / "raw" / "phantom_ts_000.json").read_text())
    assert [p["match"]["method"] for p in raw_summary["prompts"]] == ["raw"] * 3


def test_list_prompts_shows_targets_with_their_trained_and_generated_phrasings(smoke_model):
    proc = run(["nnunetv2_medals", "list-prompts", str(smoke_model["dir"])], smoke_model["env"])
    lines = proc.stdout.splitlines()
    assert "left kidney  (label 1)" in lines
    assert "kidneys  (region of labels 1, 2)" in lines
    block = proc.stdout.split("left kidney  (label 1)")[1].split("right kidney  (label")[0]
    assert "    CT of the left kidney" in block          # from dataset.json
    assert "    left-sided kidney" in block              # generated side wording
    assert "right" not in block
