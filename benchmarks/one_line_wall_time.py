"""Wall time of the one-line command on the demo's test scan: cold (a new process) and with the model already
loaded (the second and later inputs of one call).

    bash .ci/demo                                  # once: the demo model
    python benchmarks/one_line_wall_time.py        # 5 repetitions

Each repetition runs, as a user would type it,
``nnunetv2_medals predict -i SCAN -o OUT -m DEMO_MODEL_FOLDER -p "left kidney" "spleen"`` once with the scan alone
(cold: process start to exit) and once with three copies of it under other names in one call; its per-input lines
are time-stamped as they appear, so the time between the first and the second input's line is the second input's
wall time on the loaded model. Medians over the repetitions. Prints ``RESULT key=value …`` and writes
``benchmarks/results/one_line_wall_time.json``; scratch files go to a temporary folder.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_utils import machine, report

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "work_dirs" / "demo"
SCAN = DEMO / "nnUNet_raw" / "Dataset501_MedalSPhantom" / "imagesTs" / "phantom_ts_000_0000.nii.gz"
MODEL = DEMO / "nnUNet_results" / "Dataset501_MedalSPhantom" / "MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"
PROMPTS = ["left kidney", "spleen"]


def one_call(inputs: list[Path], out: Path) -> tuple[float, list[float], float]:
    """Run the command; return its wall seconds, the seconds (from start) at which each input's line appeared and
    the model-load seconds the command reports."""
    cmd = ["nnunetv2_medals", "predict", "-i", *map(str, inputs), "-o", str(out), "-m", str(MODEL), "-p", *PROMPTS]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    names = {p.name.removesuffix(".nii.gz") for p in inputs}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamps, loaded, lines = [], None, []
    for line in proc.stdout:
        lines.append(line)
        if line.split(":", 1)[0] in names:
            stamps.append(time.perf_counter() - start)
        if (m := re.search(r"model loaded in ([0-9.]+) s", line)):
            loaded = float(m.group(1))
    if proc.wait() or len(stamps) != len(inputs):
        raise SystemExit(f"error: {' '.join(cmd)} failed (exit {proc.returncode}):\n" + "".join(lines[-20:]))
    return time.perf_counter() - start, stamps, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "one_line_wall_time.json"))
    args = parser.parse_args()
    if not MODEL.is_dir() or not SCAN.is_file():
        raise SystemExit(f"error: {MODEL} or {SCAN} not found; run bash .ci/demo first")
    cold, first, second, third, loads = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="one_line_wall_time_") as tmp:
        tmp = Path(tmp)
        copies = []
        for name in ("scan_a", "scan_b", "scan_c"):
            copies.append(tmp / f"{name}.nii.gz")
            copies[-1].symlink_to(SCAN)
        for r in range(args.repeats):
            wall, _, load = one_call([SCAN], tmp / f"single_{r}")
            cold.append(wall)
            loads.append(load)
            _, stamps, _ = one_call(copies, tmp / f"three_{r}")
            first.append(stamps[0])
            second.append(stamps[1] - stamps[0])
            third.append(stamps[2] - stamps[1])
            print(f"repetition {r + 1}: cold {wall:.2f} s (model load {load:.2f} s); three inputs: first after "
                  f"{stamps[0]:.2f} s, second +{second[-1]:.2f} s, third +{third[-1]:.2f} s", flush=True)
    med = statistics.median
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine() + ", CPU shared with other engineers' trainings", "scan": str(SCAN.name),
              "prompts": PROMPTS, "repeats": args.repeats,
              "cold_s": round(med(cold), 2), "model_load_s": round(med(loads), 2),
              "second_input_s": round(med(second), 2), "third_input_s": round(med(third), 2),
              "cold_over_loaded": round(med(cold) / med(second), 1),
              "cold_runs_s": [round(v, 2) for v in cold], "second_input_runs_s": [round(v, 2) for v in second]}
    print(f"one-line predict on {SCAN.name} ({' + '.join(PROMPTS)}), medians of {args.repeats}: cold "
          f"{result['cold_s']} s (process start to exit; model load {result['model_load_s']} s), model already "
          f"loaded {result['second_input_s']} s per further input")
    report(result, args.out)


if __name__ == "__main__":
    main()
