"""``nnunetv2_medals evaluate``: challenge metrics over a folder of predictions against a folder of ground truth.

Both folders hold label maps named by case (any nnU-Net readable image, or challenge ``.npz`` files with ``segs`` /
``gts`` and ``spacing``). The prompt JSON says which label value means which target and which targets are instance
targets; ground truth uses the same label values. Instance ground truth is read from ``-ref_instances`` when given
(files named like the cases), from the label map itself for challenge-form prompt files with ``instance_label: 1``
(there ``gts`` holds instance ids), else split into connected components.

Per target (our report): a target counts in a case where the ground truth holds it or the prediction does (predicted
but absent scores 0, as in the challenge); absent from both, it is not scored. Semantic targets get DSC and NSD,
instance targets F1 and DSC-TP only (DSC-TP 0 without a true positive). ``.npz`` predictions of cases whose targets are
all instance targets hold instance ids (what ``predict-npz`` writes); a single value there is split into components.
``summary.json`` holds ``mean`` ({DSC, NSD, F1, DSC_TP}, macro over targets, null where not applicable),
``per_class``, ``per_modality`` and ``per_case``; ``metrics.csv`` has one row per (case, target) and ``per_class.png``
plots the per-target means. With ``challenge=True`` it also holds ``challenge``: every case scored as the challenge's
``CVPR25_text_eval.py`` does (metrics.challenge_semantic_case / challenge_instance_case), then averaged over cases —
by its rules, with two differences: NSD is our surface-voxel NSD (the script uses surfel areas) and case scores
are not rounded to 4 decimals as the script does.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import canonical_reader_name, npz_spacing_to_array_order, reader_writer_for
from nnunetv2_medals.io_utils import atomic_write_bytes, atomic_write_json, read_json
from nnunetv2_medals.metrics import (challenge_instance_case, challenge_semantic_case, connected_instances, dice,
                                     instance_f1, normalized_surface_dice)
from nnunetv2_medals.paths import canonical_modality
from nnunetv2_medals.text_prompts.canonical import canonicalise
from nnunetv2_medals.text_prompts.prompt_file import parse_prompt_file

METRICS = ("DSC", "NSD", "F1", "DSC_TP")
_IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl", ".npz")


@dataclass(frozen=True)
class EvalTarget:
    name: str
    label: int
    instance: bool
    modality: str


def _case_id(path: Path) -> str | None:
    for ending in _IMAGE_ENDINGS:
        if path.name.endswith(ending):
            return path.name[:-len(ending)]
    return None


def _cases(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise MedalSInputError(folder, "<folder>", "does not exist")
    return {cid: p for p in sorted(folder.iterdir()) if p.is_file() and (cid := _case_id(p)) is not None}


def read_label_map(path: Path, npz_key: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map and its spacing in the array's axis order (challenge npz: ``spacing`` is SimpleITK's x, y, z
    beside (D, H, W) arrays, :func:`.geometry.npz_spacing_to_array_order`)."""
    if path.name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            if npz_key not in npz.files:
                raise MedalSInputError(path, npz_key, f"missing; the file holds {', '.join(npz.files)}")
            spacing = tuple(npz_spacing_to_array_order(npz["spacing"])) if "spacing" in npz.files else None
            return npz[npz_key], spacing
    ending = path.name[len(_case_id(path)):]
    # read in the canonical orientation: a ground truth and a prediction stored in different voxel orders still
    # compare voxel for voxel (nnU-Net's plain readers would compare mirrored arrays)
    default = determine_reader_writer_from_file_ending(ending, str(path), verbose=False)
    seg, properties = reader_writer_for(canonical_reader_name(default.__name__)).read_seg(str(path))
    return seg[0], tuple(float(s) for s in properties["spacing"])


def evaluation_targets(prompt_file, case_id: str, modality: str | None) -> list[EvalTarget]:
    targets = []
    for p in prompt_file.prompts_for(case_id):
        mod = modality or prompt_file.modality
        if mod is None:
            found = canonicalise(p.text)
            mod = found.modality if found is not None else "unknown"
        targets.append(EvalTarget(p.text, p.label, p.instance, mod))
    return targets


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing, targets: Iterable[EvalTarget],
                  gt_instances: np.ndarray | None = None, gt_is_instance_map: bool = False,
                  tolerance_mm: float = 2.0, pred_is_instance_map: bool = False) -> dict[str, dict]:
    """Scores of one case: target name -> {DSC, NSD, F1, DSC_TP} (None where not applicable or not scored).

    ``pred_is_instance_map``: ``pred`` holds instance ids for the instance targets (predict-npz's ``segs``)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    out = {}
    for t in targets:
        g = gt > 0 if gt_is_instance_map else gt == t.label
        ids_given = t.instance and pred_is_instance_map
        p = pred > 0 if ids_given else pred == t.label
        scores = dict.fromkeys(METRICS)
        if not (g.any() or p.any()):
            pass                                   # absent from both: not scored
        elif not t.instance:
            scores["DSC"] = dice(p, g)
            scores["NSD"] = normalized_surface_dice(p, g, spacing, tolerance_mm)
        else:
            if gt_is_instance_map:
                instances = gt
            elif gt_instances is not None:
                instances = np.where(g, gt_instances, 0)
            else:
                instances = connected_instances(g)
            use_ids = ids_given and len(np.unique(pred[p])) > 1    # one value: a binary mask, split here
            result = instance_f1(pred if use_ids else p, instances, pred_is_instances=use_ids)
            scores["F1"], scores["DSC_TP"] = result.f1, result.dsc_tp
        out[t.name] = scores
    return out


def challenge_case(pred: np.ndarray, gt: np.ndarray, spacing, targets: list[EvalTarget],
                   gt_instances: np.ndarray | None = None, gt_is_instance_map: bool = False,
                   tolerance_mm: float = 2.0) -> dict[str, float | None]:
    """One case scored by ``CVPR25_text_eval.py``'s rules (NSD on surface voxels, not rounded; see the module
    docstring): {DSC, NSD} over every prompted class id for a semantic case,
    {F1} of the whole maps for an instance case (None where the script has NaN)."""
    if not targets:
        return dict.fromkeys(("DSC", "NSD", "F1"))
    if all(t.instance for t in targets):
        if gt_instances is None and not gt_is_instance_map:
            gt_instances = connected_instances(np.isin(gt, [t.label for t in targets]))
        f1 = challenge_instance_case(gt if gt_instances is None else gt_instances, pred)
        return {"DSC": None, "NSD": None, "F1": f1}
    if any(t.instance for t in targets):
        raise ValueError("the challenge scores a case as all-semantic or all-instance; this one mixes both")
    dsc, nsd = challenge_semantic_case(gt, pred, [t.label for t in targets], spacing, tolerance_mm)
    return {"DSC": None if math.isnan(dsc) else dsc, "NSD": None if math.isnan(nsd) else nsd, "F1": None}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def aggregate(per_case: dict[str, dict[str, dict]], modality_of: dict[str, str]) -> dict:
    """per_class = mean over the cases holding the target; mean = macro over targets; per_modality likewise."""
    names = list(dict.fromkeys(n for scores in per_case.values() for n in scores))
    per_class = {n: {m: _mean(per_case[c][n][m] for c in per_case if n in per_case[c]) for m in METRICS}
                 for n in names}
    per_modality = {}
    for mod in sorted(set(modality_of.values())):
        members = [n for n in names if modality_of.get(n) == mod]
        per_modality[mod] = {m: _mean(per_class[n][m] for n in members) for m in METRICS}
    mean = {m: _mean(per_class[n][m] for n in names) for m in METRICS}
    return {"mean": mean, "per_class": per_class, "per_modality": per_modality, "per_case": per_case}


def evaluate_folders(ref_dir: str | Path, pred_dir: str | Path, prompts: str | Path, out_dir: str | Path,
                     ref_instances_dir: str | Path | None = None, modality: str | None = None,
                     tolerance_mm: float = 2.0, challenge: bool = False) -> dict:
    """Score every ground-truth case of ``ref_dir`` against ``pred_dir``; writes summary.json, metrics.csv and
    per_class.png into ``out_dir`` (atomically) and returns the summary (with ``challenge`` if asked for)."""
    ref_dir, pred_dir, out_dir = Path(ref_dir), Path(pred_dir), Path(out_dir)
    raw = read_json(prompts, "prompt file")
    prompt_file = parse_prompt_file(raw, prompts)
    if modality is not None:
        modality = canonical_modality(modality, "command line", "--modality")
    gt_is_instance_map = "prompts" not in raw and "cases" not in raw and bool(raw.get("instance_label", 0))
    refs, preds = _cases(ref_dir), _cases(pred_dir)
    if not refs:
        raise MedalSInputError(ref_dir, "<folder>", "holds no label maps")
    instances = _cases(Path(ref_instances_dir)) if ref_instances_dir is not None else {}
    per_case, modality_of, per_case_challenge = {}, {}, {}
    for case, ref_path in refs.items():
        if case not in preds:
            raise MedalSInputError(pred_dir / ref_path.name, "<file>", f"missing: no prediction for case {case!r} "
                                                                       f"of {ref_dir}")
        gt, spacing = read_label_map(ref_path, "gts")
        pred, _ = read_label_map(preds[case], "segs")
        if spacing is None:
            raise MedalSInputError(ref_path, "spacing", "missing; NSD needs the voxel spacing")
        if pred.shape != gt.shape:
            raise MedalSInputError(preds[case], "<shape>", f"{pred.shape} differs from the ground truth's {gt.shape} "
                                                           f"({ref_path})")
        gt_inst = None
        if case in instances:
            gt_inst, _ = read_label_map(instances[case], "gts")
        targets = evaluation_targets(prompt_file, case, modality)
        for t in targets:
            modality_of.setdefault(t.name, t.modality)
        ids_in_pred = preds[case].name.endswith(".npz") and bool(targets) and all(t.instance for t in targets)
        per_case[case] = evaluate_case(pred, gt, spacing, targets, gt_inst, gt_is_instance_map, tolerance_mm,
                                       pred_is_instance_map=ids_in_pred)
        if challenge:
            try:
                # the challenge's script hands the npz spacing (x, y, z) to the surface distances of (D, H, W)
                # arrays unchanged; --challenge reproduces that
                stored = spacing[::-1] if ref_path.name.endswith(".npz") else spacing
                per_case_challenge[case] = challenge_case(pred, gt, stored, targets, gt_inst, gt_is_instance_map,
                                                          tolerance_mm)
            except ValueError as e:
                raise MedalSInputError(prompts, case, str(e)) from None
    summary = aggregate(per_case, modality_of)
    summary["tolerance_mm"] = tolerance_mm
    if challenge:
        summary["challenge"] = {"mean": {m: _mean(s[m] for s in per_case_challenge.values())
                                         for m in ("DSC", "NSD", "F1")}, "per_case": per_case_challenge}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_bytes(out_dir / "metrics.csv", _csv_bytes(per_case, modality_of))
    atomic_write_bytes(out_dir / "per_class.png", _plot_png(summary["per_class"]))
    return summary


def _csv_bytes(per_case: dict, modality_of: dict) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "target", "modality", *METRICS])
    for case, scores in per_case.items():
        for name, s in scores.items():
            writer.writerow([case, name, modality_of.get(name, ""),
                             *("" if s[m] is None else f"{s[m]:.4f}" for m in METRICS)])
    return buffer.getvalue().encode()


def _plot_png(per_class: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    metrics = [m for m in METRICS if any(per_class[n][m] is not None for n in names)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.6), dpi=120)
    width = 0.8 / max(len(metrics), 1)
    x = np.arange(len(names))
    for i, m in enumerate(metrics):
        values = [per_class[n][m] if per_class[n][m] is not None else np.nan for n in names]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, values, width, label=m)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, ncols=len(metrics), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def validation_dice_by_target(fold_dir: str | Path) -> dict[str, float]:
    """Per-target Dice of nnU-Net's validation (``fold_x/validation/summary.json``), keyed by target name.

    nnU-Net keys its region summary by label tuples; the results folder's ``dataset.json`` names them.
    """
    fold_dir = Path(fold_dir)
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    labels = json.loads((fold_dir.parent / "dataset.json").read_text())["labels"]
    names = {}
    for name, values in labels.items():
        if name != "background":
            values = values if isinstance(values, list) else [values]
            names.setdefault(str(tuple(values)), name)
            names.setdefault(str(tuple(dict.fromkeys(values))), name)
    return {names.get(key, key): float(stats["Dice"]) for key, stats in summary["mean"].items()}
