"""BiomedSegFM challenge data -> one text-prompted nnU-Net raw dataset (``nnunetv2_medals convert-biomedsegfm``).

Input: ``NPZ_ROOT`` with one folder per challenge dataset (named as the keys of the challenge prompt JSON, found
recursively), each holding ``.npz`` files with ``imgs`` (D, H, W; 0-255), ``gts`` (same shape; class ids, or instance
ids for ``instance_label: 1`` datasets) and ``spacing`` (mm, SimpleITK's x, y, z order, as the challenge's own
converter reads it: :func:`..geometry.npz_spacing_to_array_order`). Files without ``gts`` go to ``imagesTs``; every
NIfTI written is what ``sitk.GetImageFromArray(imgs)`` + ``SetSpacing(spacing)`` gives.

Output (written into a temporary folder and renamed into place, so it appears complete or not at all; the source
files are only read):

* one global label space: classes of different datasets that mean the same structure (the canonicaliser's class map,
  e.g. "Liver" of CT_AMOS and of CT_Abdomen1K) become one label whose ``text_prompts`` are the union of phrasings;
* ``annotated_labels.json``: each case annotates only its source dataset's classes (partial labels, so the trainer
  draws negatives only from those);
* instance datasets: training labels are binary, the instance ids are kept in ``labelsTr_instances/`` for
  ``nnunetv2_medals evaluate -ref_instances``;
* the single channel is ``rgb_to_0_1`` (nnU-Net divides by 255: the challenge already windowed every image to 0-255).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import npz_spacing_to_array_order
from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json, read_json, write_nifti
from nnunetv2_medals.paths import raw_dataset_folder
from nnunetv2_medals.text_prompts.canonical import Canonicaliser, modality_of_dataset

INSTANCE_FOLDER = "labelsTr_instances"


@dataclass
class _Label:
    name: str
    value: int
    phrasings: list[str] = field(default_factory=list)
    instance: bool = False


def find_dataset_folders(npz_root: Path, names: Sequence[str]) -> dict[str, list[Path]]:
    """Challenge dataset name -> its .npz files (folders found anywhere below ``npz_root``)."""
    wanted = set(names)
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, _ in os.walk(npz_root):
        dirnames.sort()
        name = os.path.basename(dirpath)
        if name in wanted:
            files = sorted(Path(dirpath).rglob("*.npz"))
            found.setdefault(name, []).extend(files)
            dirnames[:] = []  # its subfolders were searched by rglob
    return found


def _case_name(dataset: str, npz: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{dataset}_{npz.stem}")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # a truncated or foreign file
        raise MedalSInputError(path, "<file>", f"cannot be read as .npz ({e})") from None
    with npz:
        for key in ("imgs", "spacing"):
            if key not in npz.files:
                raise MedalSInputError(path, key, f"missing; challenge files hold imgs, gts, spacing "
                                                  f"(this one: {', '.join(npz.files)})")
        imgs, spacing = npz["imgs"], npz["spacing"].astype(float)
        gts = npz["gts"] if "gts" in npz.files else None
    if imgs.ndim != 3:
        raise MedalSInputError(path, "imgs", f"must be a 3D (D, H, W) array, got shape {imgs.shape}")
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise MedalSInputError(path, "spacing", f"must hold 3 positive values, got {spacing.tolist()}")
    if gts is not None and gts.shape != imgs.shape:
        raise MedalSInputError(path, "gts", f"shape {gts.shape} differs from imgs {imgs.shape}")
    if imgs.min() < 0 or imgs.max() > 255:
        raise MedalSInputError(path, "imgs", f"values must lie in 0-255 (challenge preprocessing), found "
                                             f"{imgs.min()}..{imgs.max()}")
    return imgs, gts, np.asarray(npz_spacing_to_array_order(spacing))


def build_label_space(prompt_map: dict, datasets: Sequence[str], canonicaliser) -> tuple[dict[str, _Label],
                                                                                           dict[tuple[str, str], str]]:
    """Global labels (in order of first appearance) and (dataset, class id) -> label name."""
    labels: dict[str, _Label] = {}
    of_class: dict[tuple[str, str], str] = {}
    owner: dict[str, str] = {}
    for ds in datasets:
        instance = bool(prompt_map[ds].get("instance_label", 0))
        for class_id, phrasings in prompt_map[ds].items():
            if class_id == "instance_label":
                continue
            name = canonicaliser.sources[(ds, class_id)].name
            label = labels.setdefault(name, _Label(name, len(labels) + 1))
            label.instance = label.instance or instance
            for p in [phrasings] if isinstance(phrasings, str) else phrasings:
                key = p.strip().casefold()
                if owner.setdefault(key, name) == name and p.strip() not in label.phrasings:
                    label.phrasings.append(p.strip())
            of_class[(ds, class_id)] = name
    return labels, of_class


def convert_biomedsegfm(npz_root: str | Path, prompts_json: str | Path, dataset_id: int,
                        name: str = "BiomedSegFM", datasets: Sequence[str] | None = None,
                        output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Convert challenge datasets into ``$nnUNet_raw/DatasetDDD_<name>`` (or ``output``); returns the folder."""
    npz_root, prompts_json = Path(npz_root), Path(prompts_json)
    if not npz_root.is_dir():
        raise MedalSInputError(npz_root, "-i", "is not a folder")
    prompt_map = read_json(prompts_json, "prompt file")
    canonicaliser = Canonicaliser(prompt_map, prompts_json)  # validates the map
    if datasets:
        unknown = [d for d in datasets if d not in prompt_map]
        if unknown:
            raise MedalSInputError(prompts_json, unknown[0], "no such dataset in the prompt file (--datasets)")
    selected = list(datasets) if datasets else list(prompt_map)
    files = find_dataset_folders(npz_root, selected)
    if datasets:
        missing = [d for d in datasets if not files.get(d)]
        if missing:
            raise MedalSInputError(npz_root, missing[0], "no folder of that name with .npz files below -i")
    selected = [d for d in selected if files.get(d)]
    if not selected:
        raise MedalSInputError(npz_root, "-i", f"no folder named after a dataset of {prompts_json.name} holds .npz "
                                               f"files")
    for ds in selected:
        if prompt_map[ds].get("instance_label") and len([k for k in prompt_map[ds] if k != "instance_label"]) != 1:
            raise MedalSInputError(prompts_json, ds, "an instance dataset must have exactly one class (its gts hold "
                                                     "instance ids, not class ids)")
    labels, of_class = build_label_space(prompt_map, selected, canonicaliser)
    modalities = sorted({modality_of_dataset(d) for d in selected})

    output = raw_dataset_folder(dataset_id, name, output)

    annotated: dict[str, list[str]] = {}
    num_training = 0
    with atomic_directory(output, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for ds in selected:
            instance_ds = bool(prompt_map[ds].get("instance_label", 0))
            lut = np.zeros(256 if not instance_ds else 1, dtype=np.uint8)
            for (d, class_id), label_name in of_class.items():
                if d == ds and not instance_ds:
                    lut[int(class_id)] = labels[label_name].value
            instance_value = labels[of_class[(ds, next(k for k in prompt_map[ds] if k != "instance_label"))]].value
            for npz in files[ds]:
                imgs, gts, spacing = _read_npz(npz)
                case = _case_name(ds, npz)
                if gts is None:
                    write_nifti(imgs, spacing, tmp / "imagesTs" / f"{case}_0000.nii.gz")
                    continue
                write_nifti(imgs, spacing, tmp / "imagesTr" / f"{case}_0000.nii.gz")
                if instance_ds:
                    seg = np.where(gts > 0, instance_value, 0).astype(np.uint8)
                    (tmp / INSTANCE_FOLDER).mkdir(exist_ok=True)
                    write_nifti(gts.astype(np.uint32), spacing, tmp / INSTANCE_FOLDER / f"{case}.nii.gz")
                else:
                    if gts.min() < 0 or gts.max() >= len(lut):
                        raise MedalSInputError(npz, "gts", f"holds label {gts.max()} outside 0-255")
                    seg = lut[gts.astype(np.int64)]
                write_nifti(seg, spacing, tmp / "labelsTr" / f"{case}.nii.gz")
                annotated[case] = [n for (d, _), n in of_class.items() if d == ds]
                num_training += 1
        if num_training == 0:
            raise MedalSInputError(npz_root, "gts", "no .npz file holds ground truth (gts); nothing to train on")
        dataset_json = {
            "name": name,
            "description": f"BiomedSegFM challenge data converted by nnunetv2-medals from {', '.join(selected)}",
            "channel_names": {"0": "rgb_to_0_1"},
            "labels": {"background": 0, **{lab.name: lab.value for lab in labels.values()}},
            "numTraining": num_training,
            "file_ending": ".nii.gz",
            "text_prompts": {lab.name: {"prompts": lab.phrasings, "instance": lab.instance}
                             for lab in labels.values()},
            "source_datasets": selected,
        }
        if len(modalities) == 1:
            dataset_json["imaging_modality"] = modalities[0]
        atomic_write_json(tmp / "dataset.json", dataset_json)
        if len(selected) > 1:
            atomic_write_json(tmp / "annotated_labels.json", annotated)
        load_text_prompted_dataset(tmp)  # the result must pass our own validator before it is moved into place
    return output
