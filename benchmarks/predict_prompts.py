"""Prediction time vs number of prompts N: parallel (one forward for all N) vs sequential (one forward per prompt).

    python benchmarks/predict_prompts.py                 # the README demo's model and first test image
    python benchmarks/predict_prompts.py --quick         # 1 repeat, N = 1, 8, 24
    python benchmarks/predict_prompts.py -m MODEL_DIR -i IMAGE_0000.nii.gz

Same image, same model, same sliding window (nnU-Net's, Gaussian, 50 % overlap); only the network calls differ.
Runs are interleaved over modes and N, medians reported. Prints a table, ``RESULT key=value …`` and writes
``benchmarks/results/predict_prompts.json``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch

from bench_utils import report, timed
from nnunetv2_medals.inference.predictor import load_model, prompt_label_manager

DEMO = Path(__file__).resolve().parents[1] / "work_dirs" / "demo"
DEFAULT_MODEL = DEMO / "nnUNet_results" / "Dataset501_MedalSPhantom" / "MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"
DEFAULT_IMAGE = DEMO / "nnUNet_raw" / "Dataset501_MedalSPhantom" / "imagesTs" / "phantom_ts_000_0000.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", default=str(DEFAULT_MODEL), help="trained MedalS model folder")
    parser.add_argument("-i", default=str(DEFAULT_IMAGE), help="image (one channel)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 4, 8, 16, 24])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict_prompts.json"))
    args = parser.parse_args()
    if args.quick:
        args.ns, args.repeats = [1, 8, 24], 1
    if not Path(args.m).is_dir() or not Path(args.i).is_file():
        raise SystemExit(f"model {args.m} or image {args.i} not found: run `bash .ci/demo` first or pass -m/-i")

    device = torch.device(args.device)
    parallel = load_model(args.m, (0,), device=device)
    sequential = load_model(args.m, (0,), device=device, sequential=True)
    phrasings = parallel.vocabulary["phrasings"]
    texts = [phrasings[i % len(phrasings)] for i in range(max(args.ns))]
    data, _, _ = parallel.preprocess_case([args.i], [])
    data = torch.from_numpy(data) if not isinstance(data, torch.Tensor) else data

    def run(predictor, n):
        predictor._text = predictor.embed(texts[:n]).to(device)
        predictor._n_image_channels = data.shape[0]
        predictor.label_manager = prompt_label_manager(list(range(1, n + 1)))
        return timed(lambda: predictor._probabilities(data, None), device)

    modes = {"parallel": parallel, "sequential": sequential}
    times = {(m, n): [] for m in modes for n in args.ns}
    run(parallel, 1)  # warm-up
    for _ in range(args.repeats):
        for n in args.ns:
            for m, predictor in modes.items():
                times[(m, n)].append(run(predictor, n))
    med = {k: statistics.median(v) for k, v in times.items()}
    n0 = args.ns[0]
    print(f"prediction of {Path(args.i).name} (network grid {tuple(data.shape[1:])}), device={args.device} "
          f"({platform.machine()}, {torch.get_num_threads()} threads), medians of {args.repeats}")
    print(f"{'N':>4} {'parallel s':>11} {'sequential s':>13} {'speed-up':>9} {'par t(N)/t(1)':>14}")
    for n in args.ns:
        p, s = med[("parallel", n)], med[("sequential", n)]
        print(f"{n:>4} {p:>11.2f} {s:>13.2f} {s / p:>9.1f} {p / med[('parallel', n0)]:>14.2f}")
    nmax = max(args.ns)
    result = {"device": args.device, f"speedup_{nmax}": round(med[("sequential", nmax)] / med[("parallel", nmax)], 2),
              f"parallel_ratio_{nmax}_{n0}": round(med[("parallel", nmax)] / med[("parallel", n0)], 3),
              **{f"parallel_{n}_s": round(med[("parallel", n)], 3) for n in args.ns},
              **{f"sequential_{n}_s": round(med[("sequential", n)], 3) for n in args.ns}}
    report(result, args.out)


if __name__ == "__main__":
    main()
