"""Fine-tuning a MedalS model on a second text-prompted dataset with new classes and phrasings, through the stock
``nnUNetv2_train … -pretrained_weights`` (the README's recipe, smoke-sized)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_medals.network.medals_network import TRAINED_TARGETS_PREFIX
from tests.helpers import PHANTOM_ID, run, train_env

TARGET_ID = PHANTOM_ID + 1
TARGET_NAME = f"Dataset{TARGET_ID}_MedalSPhantomNew"
#: phantom label value -> the new dataset's: both kidneys one class, liver with its tumour one, spleen renamed,
#: lymph nodes dropped (3 targets where the pretrained model has 8)
REMAP = np.array([0, 1, 1, 2, 2, 3, 0], np.uint8)
NEW_TARGETS = {"kidneys": ["kidneys", "both renal organs"], "whole liver": ["whole liver", "hepatic organ"],
               "lienal organ": ["lienal organ", "the spleen"]}


def write_new_dataset(preprocessed) -> None:
    """The phantom's training cases relabelled with new classes and phrasings; ``overwrite_image_reader_writer``
    keeps nnU-Net's own commands (move_plans, preprocess) on the canonical reader the pretrained model read with."""
    source = preprocessed["raw"]
    target = preprocessed["root"] / "raw" / TARGET_NAME
    (target / "labelsTr").mkdir(parents=True)
    shutil.copytree(source / "imagesTr", target / "imagesTr")
    for f in sorted((source / "labelsTr").glob("*.nii.gz")):
        labels = sitk.ReadImage(str(f))
        new = sitk.GetImageFromArray(REMAP[sitk.GetArrayFromImage(labels)])
        new.CopyInformation(labels)
        sitk.WriteImage(new, str(target / "labelsTr" / f.name))
    dataset = json.loads((source / "dataset.json").read_text())
    dataset.pop("text_regions", None)
    dataset.update(name="MedalSPhantomNew", text_prompts=NEW_TARGETS,
                   labels={"background": 0, **{name: i + 1 for i, name in enumerate(NEW_TARGETS)}},
                   overwrite_image_reader_writer="SimpleITKIOWithReorient")
    (target / "dataset.json").write_text(json.dumps(dataset, indent=2))


def test_stock_train_with_pretrained_weights_learns_new_classes(smoke_model, preprocessed_phantom):
    env = preprocessed_phantom["env"]
    write_new_dataset(preprocessed_phantom)
    run(["nnUNetv2_plan_and_preprocess_medals", "-d", str(TARGET_ID), "-pl", "MedalSPlannerCPU", "-c", "3d_fullres",
         "--no_pp", "-npfp", "1"], env)
    run(["nnUNetv2_move_plans_between_datasets", "-s", str(PHANTOM_ID), "-t", str(TARGET_ID), "-sp",
         "MedalSPlansCPU", "-tp", "MedalSPlansCPU"], env)
    run(["nnUNetv2_preprocess", "-d", str(TARGET_ID), "-plans_name", "MedalSPlansCPU", "-c", "3d_fullres", "-np",
         "1"], env)
    plans = json.loads((preprocessed_phantom["root"] / "preprocessed" / TARGET_NAME / "MedalSPlansCPU.json")
                       .read_text())
    assert plans["image_reader_writer"] == "SimpleITKIOWithReorient"

    pretrained = smoke_model["dir"] / "fold_0" / "checkpoint_final.pth"
    proc = run(["nnUNetv2_train", str(TARGET_ID), "3d_fullres", "0", "-tr", "MedalSTrainer_smoke", "-p",
                "MedalSPlansCPU", "-device", "cpu", "-pretrained_weights", str(pretrained)],
               train_env(preprocessed_phantom))
    assert "Loading pretrained weights" in proc.stdout
    out = preprocessed_phantom["root"] / "results" / TARGET_NAME / "MedalSTrainer_smoke__MedalSPlansCPU__3d_fullres"
    tuned = torch.load(out / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    before = torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"]
    weights = tuned["network_weights"]
    # the new dataset's targets win: its vocabulary and one class embedding per new target
    vocabulary = weights[TRAINED_TARGETS_PREFIX + "_extra_state"]
    assert [t["name"] for t in vocabulary["targets"]] == list(NEW_TARGETS)
    assert weights[TRAINED_TARGETS_PREFIX + "class_embeddings"].shape == (3, 384)
    # everything else started from the pretrained network: the text centring is copied as is, weights moved only
    # by three small steps (a fresh initialisation is far from them)
    torch.testing.assert_close(weights["text_center"], before["text_center"])
    shared = [k for k, v in weights.items() if ".seg_layers." not in k and torch.is_tensor(v) and v.is_floating_point()]
    assert len(shared) > 50 and set(shared) <= set(before)
    assert max(float((weights[k] - before[k]).abs().max()) for k in shared) < 1e-2
    # and the fine-tuned model answers its new phrasings through the one-line command
    scan = preprocessed_phantom["raw"] / "imagesTs" / "phantom_ts_000_0000.nii.gz"
    result = preprocessed_phantom["root"] / "fine_tuned_prediction"
    run(["nnunetv2_medals", "predict", "-i", str(scan), "-o", str(result), "-m", str(out), "-p", "hepatic organ"],
        env)
    legend = json.loads((result / "phantom_ts_000_0000_legend.json").read_text())
    assert legend["labels"]["1"]["matched_target"] == "whole liver"
