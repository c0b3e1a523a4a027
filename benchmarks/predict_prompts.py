"""Prediction time and peak memory vs number of prompts N: parallel (one forward for all N) vs sequential (one
forward per prompt).

    python benchmarks/predict_prompts.py                 # the README demo's model and first test image
    python benchmarks/predict_prompts.py --quick         # 1 repeat, N = 1, 8, 24
    python benchmarks/predict_prompts.py -m MODEL_DIR -i IMAGE_0000.nii.gz

Same image, same model, same sliding window (nnU-Net's, Gaussian, 50 % overlap); only the network calls differ.
Runs are interleaved over modes and N, medians reported (memory: peak above the start of the call, process RSS on
CPU, allocated memory on CUDA). Prints a table, ``RESULT key=value …``, writes
``benchmarks/results/predict_prompts.json`` and a plot of time vs N, ``benchmarks/results/predict_prompts.png``.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

import torch

from bench_utils import PeakMemory, machine, report, timed
from nnunetv2_medals.inference.export import prompt_label_manager
from nnunetv2_medals.inference.predictor import load_model

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
    phrasings = parallel.vocabulary.phrasings
    texts = [phrasings[i % len(phrasings)] for i in range(max(args.ns))]
    data, _, _ = parallel.preprocess_case([args.i], [])
    data = torch.from_numpy(data) if not isinstance(data, torch.Tensor) else data

    def run(predictor, n):
        predictor._text = predictor.embed(texts[:n]).to(device)
        predictor._n_image_channels = data.shape[0]
        predictor.label_manager = prompt_label_manager(list(range(1, n + 1)))
        with PeakMemory(device) as memory:
            seconds = timed(lambda: predictor._probabilities(data, None), device)
        return seconds, memory.gpu_mib if memory.cuda else memory.cpu_mib

    modes = {"parallel": parallel, "sequential": sequential}
    times = {(m, n): [] for m in modes for n in args.ns}
    peaks = {(m, n): [] for m in modes for n in args.ns}
    run(parallel, 1)  # warm-up
    for _ in range(args.repeats):
        for n in args.ns:
            for m, predictor in modes.items():
                seconds, mib = run(predictor, n)
                times[(m, n)].append(seconds)
                peaks[(m, n)].append(mib)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {k: max(v) for k, v in peaks.items()}
    n0 = args.ns[0]
    unit = "GPU MiB" if device.type == "cuda" else "RSS MiB"
    print(f"prediction of {Path(args.i).name} (network grid {tuple(data.shape[1:])}) on {machine()}, "
          f"{datetime.date.today()}, medians of {args.repeats}")
    print(f"{'N':>4} {'parallel s':>11} {'sequential s':>13} {'speed-up':>9} {'par t(N)/t(1)':>14} "
          f"{'par ' + unit:>13} {'seq ' + unit:>13}")
    for n in args.ns:
        p, s = med[("parallel", n)], med[("sequential", n)]
        print(f"{n:>4} {p:>11.2f} {s:>13.2f} {s / p:>9.1f} {p / med[('parallel', n0)]:>14.2f} "
              f"{mem[('parallel', n)]:>13.0f} {mem[('sequential', n)]:>13.0f}")
    nmax = max(args.ns)
    result = {"device": args.device, "machine": machine(), "date": str(datetime.date.today()),
              f"speedup_{nmax}": round(med[("sequential", nmax)] / med[("parallel", nmax)], 2),
              f"parallel_ratio_{nmax}_{n0}": round(med[("parallel", nmax)] / med[("parallel", n0)], 3),
              **{f"parallel_{n}_s": round(med[("parallel", n)], 3) for n in args.ns},
              **{f"sequential_{n}_s": round(med[("sequential", n)], 3) for n in args.ns},
              **{f"parallel_{n}_peak_mib": round(mem[("parallel", n)]) for n in args.ns},
              **{f"sequential_{n}_peak_mib": round(mem[("sequential", n)]) for n in args.ns}}
    report(result, args.out)
    plot(args.ns, med, Path(args.out).with_suffix(".png"), f"{machine()}, {datetime.date.today()}")


def plot(ns, med, path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    for mode, marker in (("sequential", "s"), ("parallel", "o")):
        ax.plot(ns, [med[(mode, n)] for n in ns], marker=marker, label=mode)
    ax.set_xlabel("prompts per image (N)")
    ax.set_ylabel("prediction time (s, median)")
    ax.set_xticks(ns)
    ax.set_title(f"parallel vs sequential prompting\n{subtitle}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
