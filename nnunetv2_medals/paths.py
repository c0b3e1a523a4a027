"""Names shared across the package: where things live, plans keys, modality names, dataset ids.

A leaf module (imports only ``errors``), so no module needs a command-line module or a planner for a constant.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from nnunetv2_medals.errors import MedalSInputError

#: key of our record in nnU-Net's plans (text encoder, network class)
PLANS_KEY = "medals"
#: the network class our planners write into the plans (found by nnU-Net through ``pydoc.locate``)
NETWORK_CLASS_NAME = "nnunetv2_medals.network.medals_network.MedalSNetwork"
#: optional file beside ``dataset.json``: case id -> label names annotated in that case
ANNOTATED_LABELS_FILE = "annotated_labels.json"

MODALITIES = ("CT", "MRI", "PET", "US", "Microscopy")
_MODALITY_ALIASES = {m.lower(): m for m in MODALITIES} | {"mr": "MRI", "ultrasound": "US", "microscope": "Microscopy"}


def canonical_modality(value: Any, file: str | Path, field_name: str = "modality") -> str:
    """Map a modality spelling (``"mr"``, ``"CT"`` …) to one of :data:`MODALITIES` or raise naming the field."""
    if isinstance(value, str) and value.strip().lower() in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[value.strip().lower()]
    raise MedalSInputError(file, field_name, f"{value!r} is not a modality; use one of {', '.join(MODALITIES)}")


def trainer_dir() -> Path:
    """The folder ``nnUNet_extTrainer`` must point at (the installed ``nnunetv2_medals.trainers``)."""
    spec = importlib.util.find_spec("nnunetv2_medals.trainers")
    return Path(spec.submodule_search_locations[0]).resolve()


def raw_dataset_folder(dataset_id: int, name: str, output: str | os.PathLike | None = None) -> Path:
    """Where a dataset builder writes: ``output`` when given, else ``$nnUNet_raw/DatasetDDD_<name>``."""
    if output is not None:
        return Path(output)
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise MedalSInputError("environment", "nnUNet_raw", "is not set; export nnUNet_raw=/path/to/nnUNet_raw "
                                                            "or pass -o FOLDER")
    return Path(raw) / f"Dataset{dataset_id:03d}_{name}"


def dataset_id(value: str) -> int:
    """argparse type of ``-d``: an nnU-Net dataset id, 1 to 999."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dataset id must be an integer between 1 and 999, got {value!r}") from None
    if not 1 <= number <= 999:
        raise argparse.ArgumentTypeError("dataset id must be between 1 and 999")
    return number
