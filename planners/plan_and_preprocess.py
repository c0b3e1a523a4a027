"""``nnUNetv2_plan_and_preprocess_medals``: nnU-Net's own plan-and-preprocess command, aware of our planners.

nnU-Net looks up ``-pl`` planners only inside its own package, so this entry point runs nnU-Net's
``plan_and_preprocess_entry`` unchanged (same flags, same help, same fingerprinting and Blosc2 preprocessing) and
only resolves our planner names to class objects. It adds two things before anything is written: the text-prompted
dataset is validated, and ``--text_encoder DIR`` chooses the encoder recorded in the plans. ``-pl`` defaults to
``MedalSPlanner``. With our planners the fingerprint is also taken in the canonical orientation the plans record
(:class:`CanonicalFingerprintExtractor`).
"""
from __future__ import annotations

import argparse
import sys
from os.path import join
from pathlib import Path
from typing import Sequence

import nnunetv2.experiment_planning.plan_and_preprocess_entrypoints as stock
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset, extract_fingerprints,
                                                                  plan_experiment_dataset, plan_experiments)
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError, one_line_errors
from nnunetv2_medals.geometry import canonical_reader_name
from nnunetv2_medals.io_utils import atomic_write_json, read_json
from nnunetv2_medals.planners.medals_planners import PLANNERS
from nnunetv2_medals.text_prompts.encoder import resolve_encoder_dir

DEFAULT_PLANNER = "MedalSPlanner"


def _our_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--text_encoder", default=None,
                        help="local Hugging Face model folder of the text encoder (default: the packaged MiniLM-L6)")
    ours, rest = parser.parse_known_args(argv)
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    probe.add_argument("-d", nargs="+", type=int, default=[])
    probe.add_argument("-pl", default=None)
    known, _ = probe.parse_known_args(rest)
    ours.d, ours.pl = known.d, known.pl
    return ours, rest


#: fingerprint key recording which reader made it
FINGERPRINT_READER_KEY = "medals_image_reader"


class CanonicalFingerprintExtractor(DatasetFingerprintExtractor):
    """nnU-Net's fingerprint (spacings, shapes, intensities) read with the reader our planners record, so the
    fingerprint's per-axis spacing and shape describe the arrays the planner and preprocessing see (canonical
    orientation, :mod:`nnunetv2_medals.geometry`). Only the in-memory dataset.json is changed; the file is not."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        example = next(iter(self.dataset.values()))["images"][0]
        default = determine_reader_writer_from_dataset_json(self.dataset_json, example, verbose=False).__name__
        self.reader_name = canonical_reader_name(default)
        if self.reader_name != default:
            self.dataset_json = {**self.dataset_json, "overwrite_image_reader_writer": self.reader_name}

    def run(self, overwrite_existing: bool = False) -> dict:
        """nnU-Net's run; a fingerprint on disk made with another reader (e.g. before canonical orientation) is
        recomputed even without ``--clean``, and the reader is recorded in it."""
        path = Path(nnUNet_preprocessed) / self.dataset_name / "dataset_fingerprint.json"
        if path.is_file() and not overwrite_existing:
            overwrite_existing = read_json(path, "fingerprint").get(FINGERPRINT_READER_KEY) != self.reader_name
        fingerprint = super().run(overwrite_existing)
        if fingerprint.get(FINGERPRINT_READER_KEY) != self.reader_name:
            fingerprint[FINGERPRINT_READER_KEY] = self.reader_name
            atomic_write_json(path, fingerprint)
        return fingerprint


def configured_planner(name: str, text_encoder: str | None):
    """Our planner class ``name`` bound to ``text_encoder`` (a subclass keeps nnU-Net's call signature)."""
    base = PLANNERS[name]
    return type(name, (base,), {"text_encoder": text_encoder, "__module__": base.__module__})


def validate_datasets(dataset_ids: Sequence[int]) -> None:
    """Validate every dataset's text prompts before anything is written."""
    for d in dataset_ids:
        try:
            name = convert_id_to_dataset_name(d)
        except RuntimeError:
            raise MedalSInputError("command line", "-d", f"no dataset with id {d} in nnUNet_raw ({nnUNet_raw}) or "
                                                         f"nnUNet_preprocessed") from None
        load_text_prompted_dataset(join(nnUNet_raw, name))


def plan_and_preprocess_entry(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = _our_args(argv)
    if "-h" in rest or "--help" in rest:
        print("nnUNetv2_plan_and_preprocess_medals: nnUNetv2_plan_and_preprocess with the Medal S planners "
              "(-pl MedalSPlanner [default] | MedalSPlannerCPU) and\n  --text_encoder DIR   local Hugging Face "
              "model folder of the text encoder recorded in the plans (default: packaged MiniLM-L6)\n"
              "nnU-Net's flags follow.\n")
    planner_name = ours.pl or DEFAULT_PLANNER
    if ours.pl is None:
        rest += ["-pl", DEFAULT_PLANNER]
    with one_line_errors():
        if planner_name in PLANNERS:
            resolve_encoder_dir(ours.text_encoder, field="--text_encoder")
            validate_datasets(ours.d)

    def plan_with_our_planners(dataset_ids, experiment_planner_class_name="ExperimentPlanner", *args, **kwargs):
        if experiment_planner_class_name not in PLANNERS:
            return plan_experiments(dataset_ids, experiment_planner_class_name, *args, **kwargs)
        planner = configured_planner(experiment_planner_class_name, ours.text_encoder)
        identifier = None
        for d in dataset_ids:
            _, identifier = plan_experiment_dataset(d, planner, *args, **kwargs)
        return identifier

    def fingerprints_in_canonical_orientation(dataset_ids, fingerprint_extractor_class_name="DatasetFingerprintExtractor",
                                              *args, **kwargs):
        if planner_name not in PLANNERS or fingerprint_extractor_class_name != "DatasetFingerprintExtractor":
            return extract_fingerprints(dataset_ids, fingerprint_extractor_class_name, *args, **kwargs)
        for d in dataset_ids:
            extract_fingerprint_dataset(d, CanonicalFingerprintExtractor, *args, **kwargs)

    stock.extract_fingerprints = fingerprints_in_canonical_orientation
    stock.plan_experiments = plan_with_our_planners
    sys.argv = [sys.argv[0], *rest]
    with one_line_errors():
        stock.plan_and_preprocess_entry()
