"""The evaluate command on files: our per-class report and the challenge's rules (``--challenge``), by hand."""
import json

import numpy as np
import pytest

from tests.helpers import instance_scene, line_scene, slabs


def _write(array, spacing_zyx, path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(image, str(path))


def test_evaluate_command_writes_summary_csv_and_plot(tmp_path, capsys):
    from nnunetv2_medals.cli import main

    ref, pred_dir, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "eval"
    ref.mkdir(), pred_dir.mkdir()
    slab_pred, slab_gt = slabs()
    # case a: label 1 = the slabs at (3, 1, 1) mm; label 2 (instances) absent from the ground truth, one voxel predicted
    gt_a = slab_gt.astype(np.uint8)
    pred_a = slab_pred.astype(np.uint8)
    pred_a[9, 0, 0] = 2
    _write(gt_a, (3.0, 1.0, 1.0), ref / "a.nii.gz")
    _write(pred_a, (3.0, 1.0, 1.0), pred_dir / "a.nii.gz")
    # case b: label 2 = the instance scene, label 1 missed completely
    inst_pred, inst_gt = instance_scene()
    gt_b = np.where(inst_gt > 0, 2, 0).astype(np.uint8)
    gt_b[23, 23, 23] = 1
    _write(gt_b, (1.0, 1.0, 1.0), ref / "b.nii.gz")
    _write((inst_pred * 2).astype(np.uint8), (1.0, 1.0, 1.0), pred_dir / "b.nii.gz")
    # instance ids of the ground truth (touching instances cannot be recovered by connected components)
    (tmp_path / "inst").mkdir()
    _write(inst_gt.astype(np.uint16), (1.0, 1.0, 1.0), tmp_path / "inst" / "b.nii.gz")
    _write(np.zeros_like(inst_gt, np.uint16)[:10, :6, :6], (3.0, 1.0, 1.0), tmp_path / "inst" / "a.nii.gz")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"modality": "CT", "prompts": [
        {"text": "liver", "label": 1}, {"text": "lymph nodes", "label": 2, "instance": True}]}))
    main(["evaluate", "-ref", str(ref), "-pred", str(pred_dir), "-prompts", str(prompts), "-o", str(out),
          "-ref_instances", str(tmp_path / "inst")])
    summary = json.loads((out / "summary.json").read_text())
    nsd_a = (132 - 36 + 112) / (132 + 112)
    liver, nodes = summary["per_class"]["liver"], summary["per_class"]["lymph nodes"]
    assert liver["DSC"] == pytest.approx((2 * 144 / (180 + 144) + 0.0) / 2)
    assert liver["NSD"] == pytest.approx((nsd_a + 0.0) / 2)
    assert liver["F1"] is None and liver["DSC_TP"] is None
    # instance targets: F1 and DSC-TP only. Case a predicts a node where there is none: F1 0 and DSC-TP 0 count
    assert nodes["DSC"] is None and nodes["NSD"] is None
    assert summary["per_case"]["a"]["lymph nodes"] == {"DSC": None, "NSD": None, "F1": 0.0, "DSC_TP": 0.0}
    assert nodes["F1"] == pytest.approx((0.0 + 0.4) / 2)
    assert nodes["DSC_TP"] == pytest.approx((0.0 + (1 + 192 / 224) / 2) / 2)
    assert summary["mean"]["F1"] == pytest.approx(0.2)
    assert summary["mean"]["DSC"] == pytest.approx(liver["DSC"])     # instance targets stay out of DSC / NSD
    assert summary["mean"]["NSD"] == pytest.approx(liver["NSD"])
    assert set(summary["per_modality"]) == {"CT"}
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,target,modality,DSC,NSD,F1,DSC_TP" and len(rows) == 5
    assert (out / "per_class.png").read_bytes()[:4] == b"\x89PNG"
    assert "lymph nodes" in capsys.readouterr().out

    # without instance ids the touching ground-truth instances become one component
    main(["evaluate", "-ref", str(ref), "-pred", str(pred_dir), "-prompts", str(prompts), "-o", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    # case b: 3 components in the ground truth, all matched; the split-off piece and the lone box are FPs
    assert summary["per_class"]["lymph nodes"]["F1"] == pytest.approx((0.0 + 2 * 3 / (2 * 3 + 2 + 0)) / 2)


def test_evaluate_challenge_npz_and_a_missing_prediction(tmp_path):
    from nnunetv2_medals.errors import MedalSInputError
    from nnunetv2_medals.evaluation import evaluate_folders

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    inst_pred, inst_gt = instance_scene()
    np.savez(ref / "c1.npz", imgs=np.zeros(inst_gt.shape, np.uint8), gts=inst_gt, spacing=np.array([1.0, 1, 1]))
    np.savez(pred / "c1.npz", segs=inst_pred.astype(np.uint8))
    prompts = tmp_path / "challenge.json"
    prompts.write_text(json.dumps({"1": ["Lesion in whole-body PET", "Lesion"], "instance_label": 1}))
    summary = evaluate_folders(ref, pred, prompts, tmp_path / "out")
    assert summary["per_class"]["Lesion in whole-body PET"]["F1"] == pytest.approx(0.4)   # gts of instance datasets hold ids
    assert set(summary["per_modality"]) == {"PET"}                      # read from the prompt text
    np.savez(ref / "c2.npz", imgs=np.zeros((2, 2, 2), np.uint8), gts=np.ones((2, 2, 2), np.uint8),
             spacing=np.array([1.0, 1, 1]))
    before = (tmp_path / "out" / "summary.json").read_bytes()
    with pytest.raises(MedalSInputError, match=r"c2\.npz.*no prediction"):
        evaluate_folders(ref, pred, prompts, tmp_path / "out")
    assert (tmp_path / "out" / "summary.json").read_bytes() == before


def test_predict_npz_instance_ids_are_read_as_instances(tmp_path):
    """predict-npz writes ``segs`` with instance ids, numbered 1..k per instance prompt and offset across them."""
    from nnunetv2_medals.evaluation import evaluate_folders

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    gts = np.zeros((12, 12, 12), np.uint16)
    for i, corner in enumerate([(0, 0, 0), (0, 6, 6), (6, 0, 6)]):     # three 27-voxel instances
        gts[tuple(slice(c, c + 3) for c in corner)] = i + 1
    np.savez(ref / "one.npz", gts=gts, spacing=np.array([1.0, 1, 1]))
    np.savez(pred / "one.npz", segs=gts.copy())                          # a perfect prediction, as written
    prompts = tmp_path / "challenge.json"
    prompts.write_text(json.dumps({"1": "Nuclei in microscopy", "instance_label": 1}))
    scores = evaluate_folders(ref, pred, prompts, tmp_path / "out")["per_case"]["one"]["Nuclei in microscopy"]
    # read as label values, only id 1 matched "label 1": DSC 2*27/(27+81) = 0.5 and F1 2/(2+2) = 0.5
    assert scores == {"DSC": None, "NSD": None, "F1": 1.0, "DSC_TP": 1.0}

    # two instance prompts: predict-npz offsets the second prompt's ids (1..2 for the first, 3 for the second)
    prompts.write_text(json.dumps({"1": "Nuclei in microscopy", "2": "Cells in microscopy", "instance_label": 1}))
    summary = evaluate_folders(ref, pred, prompts, tmp_path / "out")
    assert summary["per_class"]["Cells in microscopy"]["F1"] == 1.0


def test_challenge_flag_scores_cases_by_the_scripts_rules(tmp_path, capsys):
    from nnunetv2_medals.cli import main

    # semantic dataset: 4 prompted classes; 1 = the slabs (stored spacing [3, 1, 1], used as given), 2 missed,
    # 3 predicted but absent (0), 4 absent from both (skipped)
    ref, pred = tmp_path / "sem_ref", tmp_path / "sem_pred"
    ref.mkdir(), pred.mkdir()
    slab_pred, slab_gt = slabs()
    gt, seg = slab_gt.astype(np.uint8), slab_pred.astype(np.uint8)
    gt[8:10, 0:2, 0:2] = 2
    seg[8:10, 4:6, 4:6] = 3
    np.savez(ref / "s1.npz", gts=gt, spacing=np.array([3.0, 1.0, 1.0]))
    np.savez(pred / "s1.npz", segs=seg)
    prompts = tmp_path / "semantic.json"
    prompts.write_text(json.dumps({"1": "Liver in CT", "2": "Spleen in CT", "3": "Pancreas in CT",
                                   "4": "Aorta in CT", "instance_label": 0}))
    main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-prompts", str(prompts), "-o", str(tmp_path / "e1"),
          "--challenge"])
    summary = json.loads((tmp_path / "e1" / "summary.json").read_text())
    dsc_1, nsd_1 = 2 * 144 / (180 + 144), (132 - 36 + 112) / (132 + 112)
    assert summary["challenge"]["per_case"]["s1"]["DSC"] == pytest.approx((dsc_1 + 0 + 0) / 3)
    assert summary["challenge"]["mean"]["NSD"] == pytest.approx((nsd_1 + 0 + 0) / 3)
    assert summary["challenge"]["mean"]["F1"] is None
    # our per-class report beside it: the hallucinated class scores 0, the absent one is not scored
    assert summary["per_class"]["Pancreas in CT"]["DSC"] == 0.0
    assert summary["per_class"]["Aorta in CT"]["DSC"] is None
    assert summary["mean"]["DSC"] == pytest.approx((dsc_1 + 0 + 0) / 3)
    assert "challenge" in capsys.readouterr().out

    # instance dataset: F1 only, binary predictions split with cc3d; a case empty in both scores 0 in the script
    ref, pred = tmp_path / "inst_ref", tmp_path / "inst_pred"
    ref.mkdir(), pred.mkdir()
    line_pred, line_gt = line_scene()
    inst_pred, inst_gt = instance_scene()
    for case, gts, segs in [("i1", line_gt, line_pred), ("i2", inst_gt, inst_pred),
                            ("i3", np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), bool))]:
        np.savez(ref / f"{case}.npz", gts=gts, spacing=np.array([1.0, 1.0, 1.0]))
        np.savez(pred / f"{case}.npz", segs=segs.astype(np.uint8))
    prompts = tmp_path / "instance.json"
    prompts.write_text(json.dumps({"1": "Lesion in whole-body PET", "instance_label": 1}))
    main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-prompts", str(prompts), "-o", str(tmp_path / "e2"),
          "--challenge"])
    summary = json.loads((tmp_path / "e2" / "summary.json").read_text())
    assert summary["challenge"]["per_case"]["i1"] == {"DSC": None, "NSD": None, "F1": 0.5}
    assert summary["challenge"]["mean"]["F1"] == pytest.approx((0.5 + 0.4 + 0.0) / 3)
    assert summary["challenge"]["mean"]["DSC"] is None
    # ours: i3 (nothing there, nothing predicted) is not scored
    assert summary["mean"]["F1"] == pytest.approx((0.5 + 0.4) / 2)


def test_validation_dice_by_target_names_nnunet_region_keys(tmp_path):
    from nnunetv2_medals.evaluation import validation_dice_by_target

    fold = tmp_path / "Trainer__Plans__3d" / "fold_0"
    (fold / "validation").mkdir(parents=True)
    (fold.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": [1, 1],
                                                                     "kidneys": [2, 3]}}))
    (fold / "validation" / "summary.json").write_text(json.dumps({"mean": {"(1,)": {"Dice": 0.9},
                                                                           "(2, 3)": {"Dice": 0.8}}}))
    assert validation_dice_by_target(fold) == {"liver": 0.9, "kidneys": 0.8}
