"""Fine-tuning the demo model on a dataset with a new structure vs training from scratch, same iteration budget.

    bash .ci/demo                                   # once: the demo model (work_dirs/demo, read only here)
    python benchmarks/finetune.py                   # data, stock plans/preprocess, both trainings, evaluation
    python benchmarks/finetune.py --deadline 15:50  # stop both trainings then; compare at their last common epoch
    python benchmarks/finetune.py --skip_training   # evaluation and table only, from the trained folders

DatasetD2 is the phantom with a gallbladder (``write_phantom_dataset(gallbladder=True)``, another seed): the 8
targets of the demo plus one the demo model never saw. Both runs go through the stock commands of the README's
recipe: ``nnUNetv2_plan_and_preprocess_medals --no_pp``, ``nnUNetv2_move_plans_between_datasets`` from the demo's
plans (so both runs share one network), ``nnUNetv2_preprocess``, then ``nnUNetv2_train D2 3d_fullres 0 -tr TRAINER
-p MedalSPlansCPU`` with and without ``-pretrained_weights`` (the demo's ``checkpoint_final.pth``), side by side,
each with its own ``nnUNet_results``. Reported per target, at equal iterations:
- the pseudo-Dice of nnU-Net's training-time validation after every epoch of 10 iterations (4 batches of patches of
  the 2 fold-0 validation cases, from the checkpoint's logging), and the first iteration at which its mean over the
  last 3 validations reaches 0.8 on each target;
- when both runs finished: Dice of nnU-Net's final validation (full images, the fold-0 validation cases);
- Dice (F1 for lymph nodes) on the held-out test cases through ``nnUNetv2_predict_medals`` + ``evaluate``.
Prints the table, ``RESULT key=value …``, writes ``benchmarks/results/finetune.json``. Everything else goes to
``work_dirs/finetune``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_utils import machine, report
from nnunetv2_medals.datasets.phantom import GALLBLADDER, GALLBLADDER_LABEL, LABELS, write_phantom_dataset
from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.evaluation import validation_dice_by_target
from nnunetv2_medals.io_utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "work_dirs" / "demo"
SOURCE_ID, SOURCE_NAME = 501, "Dataset501_MedalSPhantom"
TARGET_ID = 502
TARGET_NAME = f"Dataset{TARGET_ID}_MedalSPhantomGallbladder"
PLANS, CONFIG = "MedalSPlansCPU", "3d_fullres"
RUNS = ("fine-tuned", "scratch")
THRESHOLD = 0.8
WINDOW = 3  # validations averaged before the threshold is checked


def stock(cmd: list[str], env: dict, log: Path | None = None) -> None:
    """Run one stock command; its output goes to ``log`` (or is shown); a failure stops the benchmark."""
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out if log else None, stderr=subprocess.STDOUT if log else None)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd[:2])} failed (exit {proc.returncode})" + (f"; see {log}" if log else ""))


def environment(work: Path, results: Path | None = None) -> dict:
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(results or work / "results_unused"), nnUNet_medals_cache=str(work / "cache"))
    return env


def keep_checkpoint(fold: Path, epoch: int) -> str:
    """Copy ``checkpoint_latest.pth`` to ``checkpoint_epoch_NNN.pth`` (temporary name, then rename) if it loads and
    is the one written after ``epoch``: "kept"; "busy" while nnU-Net is (re)writing it; "missed" when a later
    epoch's checkpoint has already replaced it."""
    tmp = fold / f".checkpoint_epoch_{epoch:03d}.pth.tmp"
    try:
        shutil.copy2(fold / "checkpoint_latest.pth", tmp)
        written_after = torch.load(tmp, map_location="cpu", weights_only=False)["current_epoch"]
    except Exception:  # a partly written file: torch's unpickling errors vary
        tmp.unlink(missing_ok=True)
        return "busy"
    if written_after != epoch + 1:
        tmp.unlink(missing_ok=True)
        return "missed" if written_after > epoch + 1 else "busy"
    os.replace(tmp, fold / f"checkpoint_epoch_{epoch:03d}.pth")
    return "kept"


def prepare_data(work: Path, args) -> None:
    """The new dataset, the demo's plans moved onto it, preprocessing: the README recipe's first three steps."""
    raw = work / "nnUNet_raw" / TARGET_NAME
    write_phantom_dataset(raw, args.n, args.num_test, seed=args.seed, overwrite=True, gallbladder=True)
    dataset = json.loads((raw / "dataset.json").read_text())
    dataset["overwrite_image_reader_writer"] = "SimpleITKIOWithReorient"
    atomic_write_json(raw / "dataset.json", dataset)
    source = work / "nnUNet_preprocessed" / SOURCE_NAME
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in (f"{PLANS}.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(DEMO / "nnUNet_preprocessed" / SOURCE_NAME / name, source / name)
    shutil.rmtree(work / "nnUNet_preprocessed" / TARGET_NAME, ignore_errors=True)
    env = environment(work)
    stock(["nnUNetv2_plan_and_preprocess_medals", "-d", str(TARGET_ID), "-pl", "MedalSPlannerCPU", "-c", CONFIG,
           "--no_pp", "-npfp", "1"], env, work / "plan.log")
    stock(["nnUNetv2_move_plans_between_datasets", "-s", str(SOURCE_ID), "-t", str(TARGET_ID), "-sp", PLANS,
           "-tp", PLANS], env)
    stock(["nnUNetv2_preprocess", "-d", str(TARGET_ID), "-plans_name", PLANS, "-c", CONFIG, "-np", "1"], env,
          work / "preprocess.log")


def _epochs_started(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if re.search(r": Epoch [0-9]+$", line)) if log.is_file() else 0


def train_both(work: Path, trainer: str, pretrained: Path, deadline: float | None) -> dict:
    """Both trainings at once (one shared CPU: they slow each other alike). After every epoch the run's
    checkpoint_latest.pth is kept as ``checkpoint_epoch_NNN.pth`` (once the next epoch has started, so the file is
    complete); at ``deadline`` (epoch seconds) both runs are stopped. Returns wall seconds and whether each finished."""
    procs, start = {}, time.perf_counter()
    for run in RUNS:
        results = work / f"results_{run}"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        cmd = ["nnUNetv2_train", str(TARGET_ID), CONFIG, "0", "-tr", trainer, "-p", PLANS, "-device", "cpu"]
        if run == "fine-tuned":
            cmd += ["-pretrained_weights", str(pretrained)]
        print("$ " + " ".join(cmd) + f"   (nnUNet_results={results})", flush=True)
        # the demo's 2 augmentation workers; OpenMP threads sleep instead of spinning on a shared CPU
        env = {"nnUNet_n_proc_DA": "2", "OMP_WAIT_POLICY": "PASSIVE", **environment(work, results)}
        log = open(work / f"train_{run}.log", "w")
        procs[run] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        splits = work / "nnUNet_preprocessed" / TARGET_NAME / "splits_final.json"
        while not splits.is_file() and procs[run].poll() is None:  # the first run writes it; the second reads it
            time.sleep(2)
    state = {run: {"finished": False, "kept": 0} for run in RUNS}
    stopped = False
    while any(p.poll() is None for p in procs.values()):
        for run, proc in procs.items():
            fold = fold_dir(work, run, trainer)
            started = _epochs_started(work / f"train_{run}.log")
            for epoch in range(state[run]["kept"], started - 1):  # epoch done and its checkpoint written
                kept = keep_checkpoint(fold, epoch)
                if kept == "busy":
                    break  # nnU-Net is still writing it: next poll
                if kept == "missed":
                    print(f"  {run}: epoch {epoch}'s checkpoint was replaced before it was kept", flush=True)
                state[run]["kept"] = epoch + 1
                print(f"  {run}: epoch {epoch} done after {time.perf_counter() - start:.0f} s", flush=True)
        if deadline is not None and time.time() > deadline:
            print("deadline reached: stopping both runs", flush=True)
            stopped = True
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(5)
    for run, proc in procs.items():
        proc.wait()
        state[run]["finished"] = (fold_dir(work, run, trainer) / "checkpoint_final.pth").is_file()
        if proc.returncode and not stopped:
            sys.exit(f"error: nnUNetv2_train ({run}) failed (exit {proc.returncode}); see {work}/train_{run}.log")
    return {"wall_s": round(time.perf_counter() - start, 1), **state}


def fold_dir(work: Path, run: str, trainer: str) -> Path:
    return work / f"results_{run}" / TARGET_NAME / f"{trainer}__{PLANS}__{CONFIG}" / "fold_0"


def common_checkpoint(work: Path, trainer: str) -> tuple[str, int]:
    """The checkpoint both runs have at the same epoch: checkpoint_final.pth when both finished, else the last
    ``checkpoint_epoch_NNN.pth`` they share. Returns its file name and the number of epochs behind it."""
    folds = [fold_dir(work, run, trainer) for run in RUNS]
    if all((f / "checkpoint_final.pth").is_file() for f in folds):
        epochs = len(torch.load(folds[0] / "checkpoint_final.pth", map_location="cpu",
                                weights_only=False)["logging"]["dice_per_class_or_region"])
        return "checkpoint_final.pth", epochs
    kept = [{int(p.stem.rsplit("_", 1)[1]) for p in f.glob("checkpoint_epoch_*.pth")} for f in folds]
    shared = set.intersection(*kept)
    if not shared:
        sys.exit("error: the two runs share no finished epoch yet; train longer (--deadline)")
    return f"checkpoint_epoch_{max(shared):03d}.pth", max(shared) + 1


def curves(fold: Path, checkpoint: str, targets: list[str], iterations_per_epoch: int) -> dict:
    """Per-target pseudo-Dice per epoch from the checkpoint's logging, its trailing mean over the last
    :data:`WINDOW` validations (one validation is a few patches: noisy), and the first iteration at which that mean
    reaches the threshold (None: not within the iterations behind the checkpoint)."""
    logging = torch.load(fold / checkpoint, map_location="cpu", weights_only=False)["logging"]
    raw = np.asarray(logging["dice_per_class_or_region"], float)  # (epochs, targets)
    mean = np.stack([raw[max(0, e - WINDOW + 1):e + 1].mean(0) for e in range(len(raw))])
    first = {}
    for j, name in enumerate(targets):
        hit = np.flatnonzero(mean[WINDOW - 1:, j] >= THRESHOLD) + WINDOW - 1  # full windows only
        first[name] = int((hit[0] + 1) * iterations_per_epoch) if hit.size else None
    return {"pseudo_dice": {t: raw[:, j].round(4).tolist() for j, t in enumerate(targets)},
            f"pseudo_dice_mean_of_{WINDOW}": {t: mean[:, j].round(4).tolist() for j, t in enumerate(targets)},
            "iterations_to_0.8": first}


def test_dice(work: Path, run: str, trainer: str, checkpoint: str, num_test: int) -> dict[str, float]:
    """Dice (F1 for the instance target) per labelled target on the held-out cases, one prompt per target."""
    labels = {**{k: v for k, v in LABELS.items() if v}, GALLBLADDER: GALLBLADDER_LABEL}
    prompts = {"prompts": [{"text": name, "label": value, **({"instance": True} if name == "lymph node" else {})}
                           for name, value in labels.items()]}
    out = work / f"test_{run}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "prompts.json").write_text(json.dumps(prompts))
    env = environment(work, work / f"results_{run}")
    raw = work / "nnUNet_raw" / TARGET_NAME
    stock(["nnUNetv2_predict_medals", "-d", str(TARGET_ID), "-c", CONFIG, "-f", "0", "-tr", trainer, "-p", PLANS,
           "-chk", checkpoint, "-device", "cpu", "-i", str(raw / "imagesTs"), "-o", str(out / "predictions"),
           "-prompts", str(out / "prompts.json")], env, out / "predict.log")
    stock(["nnunetv2_medals", "evaluate", "-ref", str(raw / "labelsTs"), "-pred", str(out / "predictions"),
           "-prompts", str(out / "prompts.json"), "-o", str(out / "evaluation")], env, out / "evaluate.log")
    cases = json.loads((out / "evaluation" / "summary.json").read_text())["per_case"]
    if len(cases) != num_test:
        sys.exit(f"error: {out}/evaluation/summary.json scores {len(cases)} cases, expected {num_test}")
    scores = {}
    for name in labels:
        values = [s[name]["F1"] if name == "lymph node" else s[name]["DSC"] for s in cases.values()]
        values = [v for v in values if v is not None]
        if not values:
            sys.exit(f"error: {out}/evaluation/summary.json has no score for {name!r}")
        scores[name] = float(np.mean(values))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", default="MedalSTrainer_CPUDemoEveryEpoch",
                        help="trainer of both runs (default: the demo's settings, a checkpoint every epoch)")
    parser.add_argument("-n", type=int, default=10, help="training cases of the new dataset (default 10)")
    parser.add_argument("--num_test", type=int, default=4, help="held-out cases (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (the demo's data is seed 0)")
    parser.add_argument("--deadline", default=None, metavar="HH:MM",
                        help="UTC time at which both trainings stop; the comparison then uses their last common "
                             "epoch (default: train to the end)")
    parser.add_argument("--work", default=str(ROOT / "work_dirs" / "finetune"))
    parser.add_argument("--reuse_data", action="store_true", help="train on the already preprocessed new dataset")
    parser.add_argument("--skip_training", action="store_true", help="evaluate the already trained runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune.json"))
    args = parser.parse_args()
    work = Path(args.work)
    pretrained = DEMO / "nnUNet_results" / SOURCE_NAME / f"MedalSTrainer_CPUDemo__{PLANS}__{CONFIG}" / "fold_0" / \
        "checkpoint_final.pth"
    if not pretrained.is_file():
        sys.exit(f"error: {pretrained} not found; run bash .ci/demo first")
    deadline = None
    if args.deadline:
        now = datetime.datetime.now(datetime.timezone.utc)
        hour, minute = map(int, args.deadline.split(":"))
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()
    training = None
    if not args.skip_training:
        work.mkdir(parents=True, exist_ok=True)
        if not args.reuse_data:
            prepare_data(work, args)
        training = train_both(work, args.trainer, pretrained, deadline)
    targets = load_text_prompted_dataset(work / "nnUNet_raw" / TARGET_NAME).target_names
    # the trainer's settings as nnU-Net recorded them (debug.json holds the trainer's attributes)
    debug = json.loads((fold_dir(work, RUNS[0], args.trainer) / "debug.json").read_text())
    per_epoch = int(debug["num_iterations_per_epoch"])
    schedule = int(debug["num_epochs"]) * per_epoch
    checkpoint, epochs = common_checkpoint(work, args.trainer)
    iterations = epochs * per_epoch
    runs = {}
    for run in RUNS:
        fold = fold_dir(work, run, args.trainer)
        runs[run] = {**curves(fold, checkpoint, targets, per_epoch),
                     "test_dice": test_dice(work, run, args.trainer, checkpoint, args.num_test)}
        if checkpoint == "checkpoint_final.pth" and (fold / "validation" / "summary.json").is_file():
            runs[run]["validation_dice"] = validation_dice_by_target(fold)
    fmt = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
    reach = lambda v: f">{iterations}" if v is None else str(v)  # noqa: E731
    print(f"\n{args.trainer} ({schedule}-iteration schedule), compared at {iterations} iterations ({checkpoint}); "
          f"{args.n} training cases (fold 0: 2 for validation), {args.num_test} held-out; CPU shared with other "
          f"trainings")
    print(f"{'target':<18}{'held-out Dice':>16}{'validation Dice':>18}{'iterations to 0.8':>20}")
    print(f"{'':<18}{'FT / scratch':>16}{'FT / scratch':>18}{'FT / scratch':>20}")
    for t in targets:
        test = " / ".join(fmt(runs[r]["test_dice"].get(t)) for r in RUNS)
        val = " / ".join(fmt(runs[r].get("validation_dice", {}).get(t)) for r in RUNS)
        its = " / ".join(f"{reach(runs[r]['iterations_to_0.8'][t]):>5}" for r in RUNS)
        print(f"{t:<18}{test:>16}{val:>18}{its:>20}")
    print(f"held-out: {args.num_test} test cases, one prompt per label (lymph node: instance F1); validation: "
          f"nnU-Net's full-image validation of the 2 fold-0 cases; iterations to 0.8: first validation at which "
          f"the training-time pseudo-Dice, averaged over it and the {WINDOW - 1} before, reaches 0.8")
    new = [runs[r]["test_dice"][GALLBLADDER] for r in RUNS]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine() + ", CPU shared with other trainings", "trainer": args.trainer,
              "schedule_iterations": schedule, "compared_at_iterations": iterations, "checkpoint": checkpoint,
              "new_target": GALLBLADDER,
              "gallbladder_test_dice_finetuned": round(new[0], 4), "gallbladder_test_dice_scratch": round(new[1], 4),
              "gallbladder_iterations_to_0.8_finetuned": runs["fine-tuned"]["iterations_to_0.8"][GALLBLADDER],
              "gallbladder_iterations_to_0.8_scratch": runs["scratch"]["iterations_to_0.8"][GALLBLADDER],
              "targets": targets,
              # lists, so that the RESULT line leaves them out
              "training": [] if training is None else [training],
              "runs": [{"run": r, **runs[r]} for r in RUNS]}
    report(result, args.out)


if __name__ == "__main__":
    main()
