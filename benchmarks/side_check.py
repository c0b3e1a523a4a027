"""Side check: for every prompt with a side, Dice on its own structure vs on the opposite side's structure.

    python benchmarks/side_check.py PRED_DIR GT_DIR PROMPTS_JSON DATASET_JSON [--other PRED_DIR2 GT_DIR2]

PROMPTS_JSON is the prompt file the predictions were made with (label values = the ground truth's); DATASET_JSON
names the labels ("left hippocampus" <-> "right hippocampus"). With ``--other`` the same prompts predicted on the
scan stored in another voxel order are scored beside (their difference should be ~0). Prints a table and a RESULT
line (prompts with a side, how many score higher on their own side, the largest own/other-order difference).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import SimpleITK as sitk

from nnunetv2_medals.metrics import dice


def opposite(name: str) -> str | None:
    if re.search(r"\bleft\b", name):
        return re.sub(r"\bleft\b", "right", name)
    if re.search(r"\bright\b", name):
        return re.sub(r"\bright\b", "left", name)
    return None


def scores(pred_dir: Path, gt_dir: Path, prompts: list[dict], labels: dict[str, int]) -> dict[str, tuple]:
    name_of = {v: k for k, v in labels.items()}
    out = {}
    for gt_file in sorted(gt_dir.glob("*.nii.gz")):
        # both in one orientation, whatever voxel order each file was stored in
        gt = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(gt_file)), "RAS"))
        pred = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(pred_dir / gt_file.name)), "RAS"))
        for p in prompts:
            own = name_of[p["label"]]
            other = opposite(own)
            own_dice = dice(pred == p["label"], gt == p["label"])
            # no opposite structure in this reference (absent from the scan): nothing to compare with, not a 1.0
            present = other in labels and bool((gt == labels[other]).any())
            other_dice = dice(pred == p["label"], gt == labels[other]) if present else None
            out[f"{gt_file.name[:-7]}  {p['text']}"] = (own, own_dice, other_dice)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred")
    parser.add_argument("gt")
    parser.add_argument("prompts")
    parser.add_argument("dataset_json")
    parser.add_argument("--other", nargs=2, default=None, metavar=("PRED_DIR", "GT_DIR"))
    args = parser.parse_args()
    prompts = json.loads(Path(args.prompts).read_text())["prompts"]
    labels = json.loads(Path(args.dataset_json).read_text())["labels"]
    main_scores = scores(Path(args.pred), Path(args.gt), prompts, labels)
    other = scores(Path(args.other[0]), Path(args.other[1]), prompts, labels) if args.other else {}
    width = max(len(k) for k in main_scores)
    print(f"{'case  prompt':<{width}}  {'structure':<26} own DSC  opposite DSC" + ("  other voxel order" if other else ""))
    sided = wins = 0
    worst = 0.0
    for key, (own, own_dice, other_dice) in main_scores.items():
        row = f"{key:<{width}}  {own:<26} {own_dice:7.3f}  " + ("      -     " if other_dice is None
                                                                else f"{other_dice:12.3f}")
        if other_dice is not None:
            sided += 1
            wins += own_dice > other_dice
        if other:
            twin = next((v for k, v in other.items() if k.split("  ", 1)[1] == key.split("  ", 1)[1]), None)
            if twin is not None:
                row += f"  {twin[1]:17.3f}"
                worst = max(worst, abs(twin[1] - own_dice))
        print(row)
    print(f"RESULT sided_prompts={sided} own_side_higher={wins}" + (f" max_voxel_order_diff={worst:.4f}" if other else ""))


if __name__ == "__main__":
    main()
