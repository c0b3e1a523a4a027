"""Human-readable summaries of nnU-Net outputs for MedalS models."""
from __future__ import annotations

import json
from pathlib import Path


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


def dice_per_prompt(prediction_dir: str | Path, ground_truth_dir: str | Path, prompts: dict[str, tuple[int, int]],
                    file_ending: str = ".nii.gz") -> dict[str, list[float]]:
    """Dice of each prompt over the cases of ``prediction_dir``.

    ``prompts`` maps prompt text -> (label value in the prediction, label value in the ground truth).
    """
    import SimpleITK as sitk

    from nnunetv2_medals.metrics import dice

    out: dict[str, list[float]] = {text: [] for text in prompts}
    for pred_file in sorted(Path(prediction_dir).glob(f"*{file_ending}")):
        gt_file = Path(ground_truth_dir) / pred_file.name
        if not gt_file.is_file():
            continue
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_file)))
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(gt_file)))
        for text, (p, g) in prompts.items():
            out[text].append(dice(pred == p, gt == g))
    return out
