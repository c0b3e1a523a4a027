"""Challenge metrics against values computed by hand, and the evaluate command on files."""
import json

import numpy as np
import pytest

from nnunetv2_medals.metrics import dice, instance_f1, normalized_surface_dice, surface_voxels


def box(shape, *slices):
    a = np.zeros(shape, bool)
    a[slices] = True
    return a


def test_dice_of_two_offset_cubes():
    a = box((20, 20, 20), slice(0, 10), slice(0, 10), slice(0, 10))
    b = box((20, 20, 20), slice(0, 10), slice(0, 10), slice(5, 15))  # overlap 10*10*5 = 500 of 1000 + 1000
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def slabs():
    """gt: z in [0, 4), pred: z in [0, 5), both spanning the full 6x6 plane of a (10, 6, 6) volume."""
    shape = (10, 6, 6)
    return box(shape, slice(0, 5)), box(shape, slice(0, 4))


def test_surface_voxels_of_a_slab():
    _, gt = slabs()
    # faces z=0 and z=3 (36 each) plus the in-plane ring of z=1,2 (20 each); the volume border counts as outside
    assert surface_voxels(gt).sum() == 112


def test_nsd_uses_spacing_in_array_axis_order():
    pred, gt = slabs()
    # spacing (3, 1, 1): pred's extra face z=4 (36 voxels) lies 3 mm from gt's face z=3 > 2 mm, every other pred
    # surface voxel (132 in all) touches gt's surface. Of gt's 112 surface voxels, all are within 2 mm of pred's
    # surface: the face z=3 meets pred's ring at z=3 at most 2 in-plane voxels (2 mm) away.
    expected = (132 - 36 + 112) / (132 + 112)
    assert normalized_surface_dice(pred, gt, (3.0, 1.0, 1.0)) == pytest.approx(expected)
    # the same arrays at 1 mm: the extra face is 1 mm away -> everything within tolerance
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # 3 mm along an in-plane axis instead: the z gap is 1 mm again, so NSD is 1 - the spacing order matters
    assert normalized_surface_dice(pred, gt, (1.0, 3.0, 1.0)) == pytest.approx(1.0)
    # a wider tolerance admits the 3 mm face
    assert normalized_surface_dice(pred, gt, (3.0, 1.0, 1.0), tolerance_mm=3.0) == pytest.approx(1.0)


def test_nsd_empty_cases():
    pred, gt = slabs()
    empty = np.zeros_like(gt)
    assert normalized_surface_dice(empty, gt, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(pred, empty, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(empty, empty, (1, 1, 1)) == 1.0
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(pred, gt, (1, 1))


def instance_scene():
    shape = (24, 24, 24)
    gt = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, bool)
    gt[2:6, 2:6, 2:6] = 1            # predicted exactly: TP, Dice 1
    pred[2:6, 2:6, 2:6] = True
    gt[2:6, 10:14, 2:10] = 2         # 128 voxels, predicted split in two components:
    pred[2:6, 10:14, 2:8] = True     #   96 voxels inside it: IoU 0.75 -> TP, Dice 192/224
    pred[2:6, 10:14, 9:10] = True    #   16 voxels (gap at x=8): FP
    gt[10:14, 2:6, 2:6] = 3          # three touching instances of 64 voxels ...
    gt[10:14, 2:6, 6:10] = 4
    gt[10:14, 2:6, 10:14] = 5
    pred[10:14, 2:6, 2:14] = True    # ... merged into one component: IoU 1/3 each -> 3 FN and 1 FP
    pred[20:22, 20:22, 20:22] = True  # nothing there: FP
    return pred, gt


def test_instance_f1_with_split_and_merged_components():
    pred, gt = instance_scene()
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (2, 3, 3)
    assert scores.f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 3))
    assert scores.dsc_tp == pytest.approx((1.0 + 192 / 224) / 2)


def test_instance_f1_components_are_6_connected():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1, 1, 1], gt[2, 2, 2] = 1, 2    # diagonal neighbours: two instances
    pred = gt > 0                       # one binary mask; 6-connectivity keeps them apart
    scores = instance_f1(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0) and scores.f1 == 1.0


def test_instance_f1_empty_cases():
    pred, gt = instance_scene()
    none = instance_f1(np.zeros_like(pred), gt)
    assert none.f1 == 0.0 and none.fn == 5 and none.dsc_tp is None
    assert instance_f1(pred, np.zeros_like(gt)).f1 == 0.0
    assert instance_f1(np.zeros_like(pred), np.zeros_like(gt)).f1 == 1.0


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
    # case a: label 1 = the slabs at (3, 1, 1) mm; label 2 (instances) absent from the ground truth
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
    assert nodes["F1"] == pytest.approx(0.4) and nodes["DSC_TP"] == pytest.approx((1 + 192 / 224) / 2)
    assert summary["per_case"]["a"]["lymph nodes"]["DSC"] is None  # absent in the ground truth: not scored
    assert summary["mean"]["F1"] == pytest.approx(0.4)
    assert summary["mean"]["DSC"] == pytest.approx((liver["DSC"] + nodes["DSC"]) / 2)
    assert set(summary["per_modality"]) == {"CT"}
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,target,modality,DSC,NSD,F1,DSC_TP" and len(rows) == 5
    assert (out / "per_class.png").read_bytes()[:4] == b"\x89PNG"
    assert "lymph nodes" in capsys.readouterr().out

    # without instance ids the touching ground-truth instances become one component
    main(["evaluate", "-ref", str(ref), "-pred", str(pred_dir), "-prompts", str(prompts), "-o", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    # 3 components in the ground truth, all matched; the split-off piece and the lone box are FPs
    assert summary["per_class"]["lymph nodes"]["F1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 0))


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
