"""End-to-end prediction of a large volume (a 512 x 512 x 300 phantom CT) with N = 1, 8, 24 prompts; the slab
export and nnU-Net's export side by side on the same network output.

    python benchmarks/large_volume.py                   # 300 x 512 x 512 voxels (z, y, x), N = 1, 8, 24
    python benchmarks/large_volume.py --quick           # 150 x 256 x 256 voxels
    python benchmarks/large_volume.py -m MODEL_DIR --device cuda --prompts 1 8 24

Per N, one model load for all: what ``nnUNetv2_predict_medals`` runs for one case - read, nnU-Net preprocessing,
the sliding window with all prompts per forward, the export to the image geometry (label map, Algorithm 3,
instances; the predictor's default, :mod:`nnunetv2_medals.inference.slab_export`), writing label map, instance maps
and JSON - with the wall time of each stage and the peak memory (process RSS above the start of the case; on CUDA
also the peak allocated GPU memory). Then nnU-Net's export (``method="nnunet"``: every prompt's probabilities
resampled to the image, then the label map and Algorithm 3) runs on the same network output, with its time, peak
memory and the fraction of voxels on which both label maps agree. Model: the README demo's (`bash .ci/demo`).
Prints a table, ``RESULT key=value …``, writes ``benchmarks/results/large_volume.json``.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_utils import PeakMemory, machine, report
import nnunetv2_medals.inference.predictor as predictor_module
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.io_utils import write_nifti
from nnunetv2_medals.datasets.phantom import _FOV_MM, make_phantom_case
from nnunetv2_medals.text_prompts.prompt_file import Prompt

DEMO = Path(__file__).resolve().parents[1] / "work_dirs" / "demo"
DEFAULT_MODEL = DEMO / "nnUNet_results" / "Dataset501_MedalSPhantom" / "MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"
ROWS = ["read + preprocess", "network (sliding window)", "export (slab)", "write", "total", "peak RSS MiB",
        "peak GPU MiB", "export (nnU-Net)", "peak RSS MiB (nnU-Net export)", "label agreement"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_case(predictor, prompts, image_file: Path, out: Path, device: torch.device, old_export: bool) -> dict:
    """One end-to-end prediction (slab export), then nnU-Net's export of the same network output."""
    calls = {}
    original_probabilities, original_export = type(predictor)._probabilities, predictor_module.export_prediction

    def probabilities(*a, **k):
        start = time.perf_counter()
        result = original_probabilities(predictor, *a, **k)
        sync(device)
        calls["network"] = calls.get("network", 0.0) + time.perf_counter() - start
        return result

    def export(*a, **k):
        calls["args"] = (a, k)
        start = time.perf_counter()
        result = original_export(*a, **k)
        sync(device)
        calls["export"] = time.perf_counter() - start
        return result

    predictor._probabilities = probabilities
    predictor_module.export_prediction = export
    try:
        with PeakMemory(device) as memory:
            t0 = time.perf_counter()
            data, properties, masks = predictor.preprocess_case([str(image_file)], prompts)
            t1 = time.perf_counter()
            result = predictor.predict_preprocessed(data, properties, prompts, masks)
            t2 = time.perf_counter()
            predictor.write(result, str(out / "large"))
            t3 = time.perf_counter()
    finally:
        del predictor._probabilities
        predictor_module.export_prediction = original_export
    row = {ROWS[0]: t1 - t0, ROWS[1]: calls["network"], ROWS[2]: calls["export"], ROWS[3]: t3 - t2,
           ROWS[4]: t3 - t0, ROWS[5]: memory.cpu_mib, ROWS[6]: memory.gpu_mib, "grid": tuple(data.shape[1:])}
    if old_export:
        a, k = calls["args"]
        del data, masks
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            old = original_export(*a, **{**k, "method": "nnunet"})
            row[ROWS[7]] = time.perf_counter() - start
        row[ROWS[8]] = memory.cpu_mib
        row[ROWS[9]] = float((old.label_map == result.label_map).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", default=str(DEFAULT_MODEL), help="trained MedalS model folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], help="image shape (z, y, x)")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 8, 24], help="numbers of prompts N")
    parser.add_argument("--no_old_export", action="store_true", help="skip nnU-Net's export (slow on CPU)")
    parser.add_argument("--quick", action="store_true", help="150 x 256 x 256 voxels")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "large_volume.json"))
    args = parser.parse_args()
    if args.quick:
        args.shape = [150, 256, 256]
    if not Path(args.m).is_dir():
        raise SystemExit(f"model {args.m} not found: run `bash .ci/demo` first or pass -m")
    device = torch.device(args.device)

    spacing = tuple(float(f / n) for f, n in zip(_FOV_MM, args.shape))
    start = time.perf_counter()
    case = make_phantom_case(np.random.default_rng(0), spacing)
    tmp = Path(tempfile.mkdtemp(prefix="medals_large_"))
    image_file = tmp / "large_0000.nii.gz"
    write_nifti(case.image_hu, case.spacing_mm, image_file)
    print(f"phantom {case.image_hu.shape} at {tuple(round(s, 3) for s in spacing)} mm written in "
          f"{time.perf_counter() - start:.1f} s")
    del case

    # raw text: every phrasing keeps its own embedding, so the N prompts are N different network outputs (matched to
    # their targets, the phrasings of one target would share one class embedding and the export would see duplicates)
    predictor = load_model(args.m, (0,), device=device, raw_text=True)
    phrasings = list(dict.fromkeys(predictor.vocabulary.phrasings))
    if len(phrasings) < max(args.prompts):
        print(f"note: the model has {len(phrasings)} phrasings; prompts beyond that repeat one")
    runs = {}
    for n in args.prompts:
        prompts = [Prompt(phrasings[i % len(phrasings)], i + 1, instance=(i % 8 == 7)) for i in range(n)]
        predictor.resolve_prompts([p.text for p in prompts])  # warm the text path
        runs[n] = run_case(predictor, prompts, image_file, tmp / "out" / str(n), device, not args.no_old_export)
    grid = runs[args.prompts[0]].pop("grid")
    print(f"end-to-end prediction of {tuple(args.shape)} voxels (network grid {grid}) on {machine()}, "
          f"{datetime.date.today()}; N prompts per column")
    print(f"{'stage':<32} " + " ".join(f"{'N=' + str(n):>10}" for n in args.prompts))
    for row in ROWS:
        values = [runs[n].get(row) for n in args.prompts]
        digits = ".5f" if row == "label agreement" else ".1f" if "MiB" in row else ".2f"
        print(f"{row:<32} " + " ".join(f"{'-' if v is None else format(v, digits):>10}" for v in values))
    result = {"device": args.device, "machine": machine(), "date": str(datetime.date.today()),
              "shape": "x".join(map(str, args.shape)), "grid": "x".join(map(str, grid))}
    for n in args.prompts:
        r = runs[n]
        result.update({f"n{n}_total_s": round(r[ROWS[4]], 2), f"n{n}_network_s": round(r[ROWS[1]], 2),
                       f"n{n}_export_s": round(r[ROWS[2]], 2), f"n{n}_peak_rss_mib": round(r[ROWS[5]]),
                       f"n{n}_peak_gpu_mib": None if r[ROWS[6]] is None else round(r[ROWS[6]])})
        if ROWS[7] in r:
            result.update({f"n{n}_nnunet_export_s": round(r[ROWS[7]], 2),
                           f"n{n}_nnunet_export_peak_rss_mib": round(r[ROWS[8]]),
                           f"n{n}_agreement": round(r[ROWS[9]], 6)})
    first, last = args.prompts[0], args.prompts[-1]
    result["export_growth"] = round(runs[last][ROWS[2]] / runs[first][ROWS[2]], 2)
    report(result, args.out)
    for f in sorted(tmp.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    tmp.rmdir()


if __name__ == "__main__":
    main()
