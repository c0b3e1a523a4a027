"""End-to-end prediction of a large volume: a 512 x 512 x 300 phantom CT with 24 prompts.

    python benchmarks/large_volume.py            # 300 x 512 x 512 voxels (z, y, x), 24 prompts
    python benchmarks/large_volume.py --quick    # 150 x 256 x 256 voxels, 8 prompts
    python benchmarks/large_volume.py -m MODEL_DIR

Runs what ``nnUNetv2_predict_medals`` runs for one case - read, nnU-Net preprocessing (resampling to the model's
spacing), the sliding window with all prompts per forward, resampling the probabilities back to the image,
label map + Algorithm 3, writing the label map, instance maps and JSON - and reports the wall time of each stage
and the peak memory (process RSS above the start; on CUDA also the peak allocated GPU memory). By default it runs
twice, with nnU-Net's default probability resampling (scikit-image) and with the torch resampling our planners
write into new plans, and prints both side by side. Model: the README
demo's (`bash .ci/demo`). Prints a table, ``RESULT key=value …``, writes ``benchmarks/results/large_volume.json``.
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
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.io_utils import write_nifti
from nnunetv2_medals.datasets.phantom import _FOV_MM, make_phantom_case
from nnunetv2_medals.text_prompts.prompt_file import Prompt

DEMO = Path(__file__).resolve().parents[1] / "work_dirs" / "demo"
DEFAULT_MODEL = DEMO / "nnUNet_results" / "Dataset501_MedalSPhantom" / "MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"


STAGES = ["read + preprocess", "network (sliding window)", "export: resample back, label map, Alg. 3", "write"]
RESAMPLERS = {"default": ("resample_data_or_seg_to_shape",
                          {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}),
              "torch": ("resample_torch_fornnunet",
                        {"is_seg": False, "force_separate_z": None, "memefficient_seg_resampling": False})}


def run_once(predictor, prompts, image_file: Path, out: Path, resampling: str, device: torch.device) -> dict:
    """One end-to-end prediction; stage times (s) and peak memory (MiB)."""
    config = predictor.configuration_manager.configuration
    if resampling != "plans":
        config["resampling_fn_probabilities"], config["resampling_fn_probabilities_kwargs"] = RESAMPLERS[resampling]
    network = []
    original = type(predictor)._probabilities

    def probabilities(*a, **k):
        t = time.perf_counter()
        result = original(predictor, *a, **k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        network.append(time.perf_counter() - t)
        return result

    predictor._probabilities = probabilities
    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        data, properties, masks = predictor.preprocess_case([str(image_file)], prompts)
        t1 = time.perf_counter()
        result = predictor.predict_preprocessed(data, properties, prompts, masks)
        t2 = time.perf_counter()
        predictor.write(result, str(out / "large"))
        t3 = time.perf_counter()
    del predictor._probabilities
    return {STAGES[0]: t1 - t0, STAGES[1]: sum(network), STAGES[2]: t2 - t1 - sum(network), STAGES[3]: t3 - t2,
            "total": t3 - t0, "peak RSS MiB": memory.cpu_mib, "peak GPU MiB": memory.gpu_mib,
            "grid": tuple(data.shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", default=str(DEFAULT_MODEL), help="trained MedalS model folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], help="image shape (z, y, x)")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--resampling", default="both", choices=["both", "plans", "default", "torch"],
                        help="probability resampling of the export: nnU-Net's default (scikit-image) and torch side "
                             "by side (default), or only the model plans' / one of them")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "large_volume.json"))
    args = parser.parse_args()
    if args.quick:
        args.shape, args.prompts = [150, 256, 256], 8
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

    predictor = load_model(args.m, (0,), device=device)
    phrasings = list(dict.fromkeys(predictor.vocabulary.phrasings))
    prompts = [Prompt(phrasings[i % len(phrasings)], i + 1, instance=(i % 8 == 7)) for i in range(args.prompts)]
    predictor.embed([p.text for p in prompts])  # warm the text path

    modes = ["plans"] if args.resampling == "plans" else (["default", "torch"] if args.resampling == "both"
                                                           else [args.resampling])
    runs = {}
    for mode in modes:
        # a fresh predictor per mode: nnU-Net caches the resampling function on its ConfigurationManager
        predictor = load_model(args.m, (0,), device=device)
        runs[mode] = run_once(predictor, prompts, image_file, tmp / "out" / mode, mode, device)
    grid = runs[modes[0]].pop("grid")
    print(f"end-to-end prediction of {tuple(args.shape)} voxels (network grid {grid}), {args.prompts} prompts on "
          f"{machine()}, {datetime.date.today()}; probability resampling: {', '.join(modes)}")
    print(f"{'stage':<38} " + " ".join(f"{m:>10}" for m in modes))
    for stage in STAGES + ["total", "peak RSS MiB", "peak GPU MiB"]:
        values = [runs[m].get(stage) for m in modes]
        print(f"{stage:<38} " + " ".join(f"{'-' if v is None else format(v, '.1f'):>10}" for v in values))
    result = {"device": args.device, "machine": machine(), "date": str(datetime.date.today()),
              "shape": "x".join(map(str, args.shape)), "prompts": args.prompts}
    for m in modes:
        r = runs[m]
        result.update({f"{m}_total_s": round(r["total"], 2), f"{m}_network_s": round(r[STAGES[1]], 2),
                       f"{m}_export_s": round(r[STAGES[2]], 2), f"{m}_peak_rss_mib": round(r["peak RSS MiB"]),
                       f"{m}_peak_gpu_mib": None if r["peak GPU MiB"] is None else round(r["peak GPU MiB"])})
    if len(modes) == 2:
        result["torch_vs_default_total"] = round(runs["default"]["total"] / runs["torch"]["total"], 2)
    report(result, args.out)
    for f in sorted(tmp.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    tmp.rmdir()


if __name__ == "__main__":
    main()
