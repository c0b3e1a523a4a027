"""A trained model given as a folder or as the zip ``nnUNetv2_export_model_to_zip`` writes (``-m`` of
``nnunetv2_medals predict``). A zip is unpacked once into ``$nnUNet_medals_cache/models/``, keyed by its content;
whatever prediction needs beyond nnU-Net's files (targets, phrasings, embeddings, encoder id) is in the checkpoint."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.inference.folders import model_checkpoint
from nnunetv2_medals.text_prompts.embedding_cache import default_cache_dir

_WHAT_A_MODEL_IS = ("give a trained model folder (…/Trainer__Plans__configuration) or a zip made by "
                    "nnUNetv2_export_model_to_zip")


def model_folders_in_zip(names: Sequence[str], checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """Model folders (``Dataset/Trainer__Plans__configuration``) in a zip's member list: each with plans.json,
    dataset.json and at least one ``fold_*/checkpoint``."""
    members = set(names)
    out = []
    for name in names:
        if re.fullmatch(r"(.*/)?[^/]+__[^/]+__[^/]+/plans\.json", name) is None:
            continue
        folder = name[:-len("plans.json")]
        fold = re.compile(re.escape(folder) + r"fold_[^/]+/" + re.escape(checkpoint))
        if f"{folder}dataset.json" in members and any(fold.fullmatch(m) for m in members):
            out.append(folder.rstrip("/"))
    return out


def unpacked_model(zip_path: str | os.PathLike, checkpoint: str = "checkpoint_final.pth") -> Path:
    """The model folder of a model zip, unpacked once into the cache; a zip that holds no model (or several, or
    paths outside itself) is one :class:`MedalSInputError`, raised before anything is unpacked."""
    zip_path = Path(zip_path)
    not_a_model = (f"is not an nnU-Net model zip (nnUNetv2_export_model_to_zip writes one: Dataset/Trainer__Plans__"
                   f"configuration/ with plans.json, dataset.json and fold_N/{checkpoint})")
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise MedalSInputError(zip_path, "-m", f"{not_a_model}: {e}") from None
    if any(n.startswith("/") or ".." in Path(n).parts for n in names):
        raise MedalSInputError(zip_path, "-m", "holds paths outside its own folder; refusing to unpack it")
    folders = model_folders_in_zip(names, checkpoint)
    if not folders:
        raise MedalSInputError(zip_path, "-m", not_a_model)
    if len(folders) > 1:
        raise MedalSInputError(zip_path, "-m", f"holds {len(folders)} models ({', '.join(folders)}); export one "
                                               f"configuration (-c), or install the zip with "
                                               f"nnUNetv2_install_pretrained_model_from_zip and give one folder")
    digest = hashlib.sha256()
    with open(zip_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    target = default_cache_dir() / "models" / f"{zip_path.name.removesuffix('.zip')}-{digest.hexdigest()[:16]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(tmp)
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # another process may have unpacked the same zip meanwhile
                raise
    return target / folders[0]


def resolve_model(model: str | os.PathLike, folds: Sequence[str] | None,
                  checkpoint: str = "checkpoint_final.pth") -> Path:
    """``-m``: a trained model folder or a model zip (unpacked); every asked fold must have the checkpoint."""
    path = Path(model).expanduser()
    if path.is_file():
        path = unpacked_model(path, checkpoint)
    elif not path.is_dir():
        raise MedalSInputError(path, "-m", f"not found; {_WHAT_A_MODEL_IS}")
    for name in ("plans.json", "dataset.json"):
        if not (path / name).is_file():
            raise MedalSInputError(path, "-m", f"holds no {name}; {_WHAT_A_MODEL_IS}")
    for fold in folds or [None]:
        model_checkpoint(str(path), fold, checkpoint)
    return path
