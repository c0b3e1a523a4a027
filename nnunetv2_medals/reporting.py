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
