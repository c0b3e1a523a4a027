"""Two-stage (coarse -> fine) vs single-stage prediction on the small targets of a 2.0 x 1.5 x 1.5 mm phantom.

    bash benchmarks/two_stage_setup.sh           # once: data + the 3d_lowres and 3d_fullres models (~1 h CPU)
    python benchmarks/two_stage.py               # 3 held-out cases x 2 small targets
    python benchmarks/two_stage.py --quick       # 1 case, the liver tumour only

For each held-out case and each small target (one prompt at a time): single-stage coarse (3d_lowres on the whole
image), single-stage fine (3d_fullres on the whole image) and two-stage (3d_lowres, then 3d_fullres on the ROI with
stage 1 as spatial prompt). Reports Dice and NSD@2 mm against the ground truth (means over cases) and wall time
(read image -> label map in the image geometry, medians over cases). Prints a table, ``RESULT key=value …``,
writes ``benchmarks/results/two_stage.json``.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench_utils import machine, report
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.inference.case_files import read_image
from nnunetv2_medals.inference.two_stage import predict_two_stage
from nnunetv2_medals.metrics import dice, normalized_surface_dice
from nnunetv2_medals.text_prompts.prompt_file import Prompt

WORK = Path(__file__).resolve().parents[1] / "work_dirs" / "two_stage"
RESULTS = WORK / "nnUNet_results" / "Dataset502_MedalSPhantom"
RAW = WORK / "nnUNet_raw" / "Dataset502_MedalSPhantom"
TARGETS = {"liver tumour": 4, "lymph node": 6}
TRAINER = "MedalSTrainer_CPUDemo_100epochs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--roi_scale", type=float, default=1.25)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trainer", default=TRAINER, help="trainer of both models (default: %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "two_stage.json"))
    args = parser.parse_args()
    folders = {c: RESULTS / f"{args.trainer}__MedalSPlansCPU__{c}" for c in ("3d_lowres", "3d_fullres")}
    if not all((f / "fold_0" / "checkpoint_final.pth").is_file() for f in folders.values()):
        raise SystemExit("models not found: run `bash benchmarks/two_stage_setup.sh` first")
    device = torch.device(args.device)
    coarse = load_model(str(folders["3d_lowres"]), (0,), device=device)
    fine = load_model(str(folders["3d_fullres"]), (0,), device=device)
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (RAW / "imagesTs").glob("*_0000.nii.gz"))
    targets = dict(TARGETS)
    if args.quick:
        cases, targets = cases[:1], {"liver tumour": 4}

    modes = ("coarse", "fine", "two-stage")
    scores = {(t, m): [] for t in targets for m in modes}
    nsd = {(t, m): [] for t in targets for m in modes}
    seconds = {(t, m): [] for t in targets for m in modes}
    rois, guarded = [], 0
    for case in cases:
        files = [str(RAW / "imagesTs" / f"{case}_0000.nii.gz")]
        # the ground truth through the model's reader: the same (canonical) orientation as result.label_map
        gt = read_image(fine, [str(RAW / "labelsTs" / f"{case}.nii.gz")])[0][0]
        for text, value in targets.items():
            prompts = [Prompt(text, 1, instance=value == 6)]
            for mode in modes:
                start = time.perf_counter()
                image, props = read_image(fine, files)
                if mode == "two-stage":
                    result = predict_two_stage(coarse, fine, image, props, prompts, args.roi_scale)
                    roi = result.summary["two_stage"]["roi"]
                    guarded += bool(result.summary["two_stage"]["memory_guard"])
                    rois.append(1.0 if roi is None else float(np.prod([b - a for a, b in roi]) / gt.size))
                else:
                    result = (coarse if mode == "coarse" else fine).predict_array(image, props["spacing"], prompts)
                seconds[(text, mode)].append(time.perf_counter() - start)
                scores[(text, mode)].append(dice(result.label_map == 1, gt == value))
                nsd[(text, mode)].append(normalized_surface_dice(result.label_map == 1, gt == value, props["spacing"]))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    mean_nsd = {k: float(np.mean(v)) for k, v in nsd.items()}
    print(f"two-stage vs single-stage on {len(cases)} held-out phantom cases (2.0 x 1.5 x 1.5 mm; coarse model "
          f"{[round(s, 2) for s in coarse.configuration_manager.spacing]} mm, fine "
          f"{[round(s, 2) for s in fine.configuration_manager.spacing]} mm) on {machine()}, {datetime.date.today()}")
    print(f"{'target':<14} {'mode':<10} {'Dice (mean)':>12} {'NSD@2mm (mean)':>15} {'seconds (median)':>17}")
    for t in targets:
        for m in modes:
            print(f"{t:<14} {m:<10} {mean[(t, m)]:>12.3f} {mean_nsd[(t, m)]:>15.3f} {med[(t, m)]:>17.2f}")
    print(f"ROI = {statistics.median(rois):.1%} of the image (median); memory guard triggered in {guarded} of "
          f"{len(rois)} two-stage runs")
    result = {"device": args.device, "machine": machine(), "date": str(datetime.date.today()), "cases": len(cases),
              "roi_fraction": round(statistics.median(rois), 3), "memory_guard_runs": guarded, "trainer": args.trainer,
              "coarse_spacing": [round(s, 2) for s in coarse.configuration_manager.spacing],
              "fine_spacing": [round(s, 2) for s in fine.configuration_manager.spacing]}
    for t in targets:
        key = t.replace(" ", "_")
        for m in modes:
            result[f"{key}_{m.replace('-', '')}_dice"] = round(mean[(t, m)], 3)
            result[f"{key}_{m.replace('-', '')}_nsd"] = round(mean_nsd[(t, m)], 3)
            result[f"{key}_{m.replace('-', '')}_s"] = round(med[(t, m)], 2)
            result[f"{key}_{m.replace('-', '')}_dice_per_case"] = [round(d, 3) for d in scores[(t, m)]]
        result[f"{key}_twostage_vs_fine_time"] = round(med[(t, "fine")] / med[(t, "two-stage")], 2)
    report(result, args.out)


if __name__ == "__main__":
    main()
