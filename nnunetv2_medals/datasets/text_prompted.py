"""Text-prompted nnU-Net datasets: the one validator for the ``dataset.json`` keys this plugin adds.

A text-prompted dataset is a normal nnU-Net raw dataset whose ``dataset.json`` also holds::

    "text_prompts": {"left kidney": ["left kidney", "left renal structure"],
                     "lymph node": {"prompts": ["lymph node"], "instance": true}},
    "text_regions": {"liver": {"labels": ["liver parenchyma", "liver tumour"], "prompts": ["liver"]}},
    "imaging_modality": "CT"

(``imaging_modality``, not ``modality``: nnU-Net reads a ``modality`` key as its legacy channel map and would take
the length of the string "CT" as the number of input channels) and optionally ``annotated_labels.json`` beside it (case id -> label names annotated in that case) for datasets
whose cases are only partially labelled. Every consumer (planner, trainer, predictor, converters) goes through
:func:`load_text_prompted_dataset` so the rules live in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import read_json
from nnunetv2_medals.paths import ANNOTATED_LABELS_FILE, canonical_modality


@dataclass(frozen=True)
class PromptTarget:
    """One thing a prompt can ask for: a label, or a region (a union of labels).

    ``label_values`` holds one value for a label and several for a region; ``instance`` targets are trained as
    binary masks and returned as numbered connected components at prediction time.
    """

    name: str
    label_values: tuple[int, ...]
    prompts: tuple[str, ...]
    instance: bool = False
    is_region: bool = False


@dataclass(frozen=True)
class TextPromptedDataset:
    """A validated text-prompted dataset.

    ``targets`` are ordered regions (in file order) then labels (by value). This is the channel order of the
    trained model's stored classes and of stock ``nnUNetv2_predict`` outputs, whose label map writes channels in
    order: a region first, then its member labels over it (a voxel of "liver" that neither "liver parenchyma" nor
    "liver tumour" claims keeps the region's lowest label).
    """

    dataset_json_file: Path
    labels: Mapping[str, int]
    targets: tuple[PromptTarget, ...]
    modality: str | None = None
    annotated_labels: Mapping[str, frozenset[str]] | None = field(default=None)

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def target(self, name: str) -> PromptTarget:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def nnunet_region_labels(self) -> tuple[dict[str, list[int]], list[int]]:
        """``labels`` and ``regions_class_order`` for nnU-Net's region-based (sigmoid per channel) label handling.

        One entry per target, in target order; a region is written as its lowest label. nnU-Net switches to
        region mode only when some entry lists more than one value, so in a dataset without regions the first
        label is written as ``[v, v]`` (the same region as ``[v]``).
        """
        labels: dict[str, list[int]] = {"background": 0}
        for t in self.targets:
            labels[t.name] = list(t.label_values)
        if all(len(v) == 1 for k, v in labels.items() if k != "background"):
            first = self.targets[0].name
            labels[first] = labels[first] * 2
        return labels, [min(t.label_values) for t in self.targets]

    def all_phrasings(self) -> list[str]:
        """Every phrasing of every target, without duplicates, in target order."""
        return list(dict.fromkeys(p for t in self.targets for p in t.prompts))

    def annotated_target_mask(self, case_id: str) -> list[bool]:
        """Per target: is it annotated in ``case_id``? A region counts as annotated when all of its labels are.

        Cases missing from ``annotated_labels.json`` (or datasets without that file) are fully annotated.
        """
        if self.annotated_labels is None or case_id not in self.annotated_labels:
            return [True] * len(self.targets)
        names = self.annotated_labels[case_id]
        value_to_name = {v: k for k, v in self.labels.items()}
        return [all(value_to_name[v] in names for v in t.label_values) for t in self.targets]


def _check_phrasings(value: Any, file: Path, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise MedalSInputError(file, field_name, "needs a non-empty list of phrasings (strings)")
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p.strip():
            raise MedalSInputError(file, f"{field_name}[{i}]", f"phrasings must be non-empty strings, got {p!r}")
    return tuple(p.strip() for p in value)


def _parse_prompt_entry(value: Any, file: Path, field_name: str) -> tuple[tuple[str, ...], bool]:
    """A ``text_prompts`` value: a list of phrasings or ``{"prompts": [...], "instance": bool}``."""
    if isinstance(value, dict):
        unknown = set(value) - {"prompts", "instance"}
        if unknown:
            raise MedalSInputError(file, f"{field_name}.{sorted(unknown)[0]}",
                                   "unknown key; a prompt entry may hold only 'prompts' and 'instance'")
        if "prompts" not in value:
            raise MedalSInputError(file, f"{field_name}.prompts", "missing; give the list of phrasings")
        instance = value.get("instance", False)
        if not isinstance(instance, bool):
            raise MedalSInputError(file, f"{field_name}.instance", f"must be true or false, got {instance!r}")
        return _check_phrasings(value["prompts"], file, f"{field_name}.prompts"), instance
    return _check_phrasings(value, file, field_name), False


def _parse_labels(ds: Mapping[str, Any], file: Path) -> dict[str, int]:
    labels = ds.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise MedalSInputError(file, "labels", "missing or empty; nnU-Net needs {name: value} with background = 0")
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise MedalSInputError(file, f"labels.{name}",
                                   f"must be one integer value, got {value!r} (express unions of labels with "
                                   f"'text_regions' instead of nnU-Net region labels)")
        out[name] = value
    if out.get("background") != 0:
        raise MedalSInputError(file, "labels.background", "must exist and be 0")
    if len(set(out.values())) != len(out):
        raise MedalSInputError(file, "labels", "label values must be unique")
    beyond = sorted((v, k) for k, v in out.items() if not 0 <= v < len(out))
    if beyond:
        value, name = beyond[0]
        raise MedalSInputError(file, f"labels.{name}", f"value {value} leaves a gap: nnU-Net needs consecutive label "
                                                       f"values 0, 1, …, {len(out) - 1}; renumber the labels (and "
                                                       f"the label files) to close it")
    return out


def parse_text_prompted_dataset(ds: Mapping[str, Any], file: str | Path,
                                annotated_labels: Mapping[str, Any] | None = None,
                                annotated_file: str | Path | None = None,
                                case_ids: set[str] | None = None) -> TextPromptedDataset:
    """Validate a loaded ``dataset.json`` (and optional ``annotated_labels.json`` content).

    Raises :class:`MedalSInputError` naming the file and the field for the first problem found.
    ``case_ids``, when given, are the cases of the dataset; annotated_labels may only name those.
    """
    file = Path(file)
    labels = _parse_labels(ds, file)
    foreground = {k: v for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0}

    text_prompts = ds.get("text_prompts")
    if not isinstance(text_prompts, dict):
        raise MedalSInputError(file, "text_prompts", "missing; map every foreground label name to its phrasings, "
                                                     "e.g. {\"liver\": [\"liver\", \"hepatic tissue\"]}")
    for name in text_prompts:
        if name not in foreground:
            raise MedalSInputError(file, f"text_prompts.{name}",
                                   f"is not a foreground label; labels are {', '.join(foreground)} "
                                   f"(unions of labels go in 'text_regions')")
    targets: list[PromptTarget] = []
    regions = ds.get("text_regions", {})
    if not isinstance(regions, dict):
        raise MedalSInputError(file, "text_regions", "must map region names to {\"labels\": [...], \"prompts\": [...]}")
    for name, spec in regions.items():
        where = f"text_regions.{name}"
        if name in labels:
            raise MedalSInputError(file, where, "a region may not share its name with a label")
        if not isinstance(spec, dict):
            raise MedalSInputError(file, where, "must be {\"labels\": [label names], \"prompts\": [phrasings]}")
        unknown = set(spec) - {"labels", "prompts", "instance"}
        if unknown:
            raise MedalSInputError(file, f"{where}.{sorted(unknown)[0]}",
                                   "unknown key; a region holds 'labels', 'prompts' and optionally 'instance'")
        members = spec.get("labels")
        if not isinstance(members, list) or len(members) < 1:
            raise MedalSInputError(file, f"{where}.labels", "needs a non-empty list of label names")
        for i, m in enumerate(members):
            if m not in foreground:
                raise MedalSInputError(file, f"{where}.labels[{i}]",
                                       f"unknown label {m!r}; foreground labels are {', '.join(foreground)}")
        if len(set(members)) != len(members):
            raise MedalSInputError(file, f"{where}.labels", "lists a label twice")
        if "prompts" not in spec:
            raise MedalSInputError(file, f"{where}.prompts", "missing; give the list of phrasings")
        phrasings, instance = _parse_prompt_entry({k: v for k, v in spec.items() if k != "labels"}, file, where)
        targets.append(PromptTarget(name, tuple(sorted(foreground[m] for m in members)), phrasings, instance,
                                    is_region=True))

    for name, value in foreground.items():
        if name not in text_prompts:
            raise MedalSInputError(file, f"text_prompts.{name}",
                                   f"label '{name}' (value {value}) has no prompts; add a list of phrasings for it")
        phrasings, instance = _parse_prompt_entry(text_prompts[name], file, f"text_prompts.{name}")
        targets.append(PromptTarget(name, (value,), phrasings, instance))

    seen: dict[str, str] = {}
    for t in targets:
        for p in t.prompts:
            key = p.casefold()
            if key in seen and seen[key] != t.name:
                raise MedalSInputError(file, f"text_prompts.{t.name}" if not t.is_region else f"text_regions.{t.name}",
                                       f"phrasing {p!r} is also used for '{seen[key]}'; a phrasing must mean "
                                       f"one target")
            seen[key] = t.name

    if isinstance(ds.get("modality"), str):
        raise MedalSInputError(file, "modality", "nnU-Net reads 'modality' as its legacy channel map (the length of "
                                                 f"{ds['modality']!r} would become the number of input channels); "
                                                 "write the imaging modality as 'imaging_modality'")
    if not isinstance(ds.get("text_prompt_side_wordings", True), bool):
        raise MedalSInputError(file, "text_prompt_side_wordings", "must be true or false (false: train only on the "
                                                                  "listed phrasings, no generated side wordings)")
    modality = None
    if ds.get("imaging_modality") is not None:
        modality = canonical_modality(ds["imaging_modality"], file, "imaging_modality")

    annotated = None
    if annotated_labels is not None:
        afile = Path(annotated_file) if annotated_file is not None else file.with_name(ANNOTATED_LABELS_FILE)
        if not isinstance(annotated_labels, dict):
            raise MedalSInputError(afile, "<root>", "must map case ids to lists of annotated label names")
        annotated = {}
        for case, names in annotated_labels.items():
            if case_ids is not None and case not in case_ids:
                raise MedalSInputError(afile, case, "is not a case of this dataset (no such labelsTr file)")
            if not isinstance(names, list):
                raise MedalSInputError(afile, case, "must be a list of label names")
            for i, n in enumerate(names):
                if n not in foreground:
                    raise MedalSInputError(afile, f"{case}[{i}]",
                                           f"unknown label {n!r}; foreground labels are {', '.join(foreground)}")
            annotated[case] = frozenset(names)

    return TextPromptedDataset(file, labels, tuple(targets), modality, annotated)


def load_text_prompted_dataset(path: str | Path) -> TextPromptedDataset:
    """Load and validate a text-prompted dataset from its raw folder (or its ``dataset.json``).

    Reads ``annotated_labels.json`` beside ``dataset.json`` when present and checks it against the ``labelsTr``
    cases when that folder exists.
    """
    path = Path(path)
    ds_file = path / "dataset.json" if path.is_dir() else path
    ds = read_json(ds_file, "dataset.json")
    if not isinstance(ds, dict):
        raise MedalSInputError(ds_file, "<root>", "must be a JSON object")
    ann_file = ds_file.with_name(ANNOTATED_LABELS_FILE)
    annotated = read_json(ann_file, ANNOTATED_LABELS_FILE) if ann_file.is_file() else None
    case_ids = None
    labels_dir = ds_file.parent / "labelsTr"
    ending = ds.get("file_ending")
    if annotated is not None and labels_dir.is_dir() and isinstance(ending, str):
        case_ids = {p.name[: -len(ending)] for p in labels_dir.iterdir() if p.name.endswith(ending)}
    return parse_text_prompted_dataset(ds, ds_file, annotated, ann_file, case_ids)
