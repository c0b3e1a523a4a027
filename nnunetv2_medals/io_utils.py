"""Atomic writes (outputs appear complete or not at all), outputs kept apart from inputs, and reading JSON and
user npz files (arrays without pickle, a pickled prompt dict only through a restricted unpickler) with one clear
error."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from nnunetv2_medals.errors import MedalSInputError


def read_json(path: str | os.PathLike, what: str = "file"):
    """A JSON file's content, or one :class:`MedalSInputError` naming the file (missing, or not valid JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MedalSInputError(path, "<file>", f"{what} not found") from None
    except json.JSONDecodeError as e:
        raise MedalSInputError(path, "<file>", f"is not valid JSON ({e.msg} at line {e.lineno})") from None


def refuse_output_inside_input(output: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None],
                               output_flag: str = "-o") -> None:
    """Outputs never overwrite or sit among inputs: ``output`` may be neither equal to nor inside any of ``inputs``
    (flag -> folder or file). One :class:`MedalSInputError` naming both flags otherwise."""
    out = Path(output).resolve()
    for flag, folder in inputs.items():
        if folder is None:
            continue
        source = Path(folder).resolve()
        if out == source or source in out.parents:
            raise MedalSInputError(output, output_flag, f"is {'the same folder as' if out == source else 'inside'} "
                                                        f"the input {flag} {folder}; outputs must not overwrite or "
                                                        f"sit among inputs: choose an output folder outside it")


class _PromptDictUnpickler(pickle.Unpickler):
    """Rebuilds only what a challenge npz's pickled ``text_prompts`` holds: a 0-d object array around a dict of
    str/int/float/bool/None and lists (numpy's array/dtype/scalar rebuilders, no other class or function)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _plain_data(obj) -> bool:
    """Is ``obj`` built only of dict/list/str/int/float/bool/None (numpy scalars count as numbers)?"""
    import numpy as np

    if obj is None or isinstance(obj, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return True
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain_data(v) for v in obj)
    return False


def read_npz(path: str | os.PathLike, keys: tuple[str, ...], pickled_key: str | None = None) -> dict:
    """The arrays ``keys`` of a user's npz file, read with ``allow_pickle=False``, and optionally ``pickled_key``
    (e.g. the challenge's ``text_prompts``, a pickled dict in a 0-d object array) through a restricted unpickler
    that admits plain data only (:class:`_PromptDictUnpickler`): a crafted pickle never runs code. A missing key,
    a damaged or truncated file and anything else in the pickle are one :class:`MedalSInputError` naming the file.
    """
    import numpy as np

    path = Path(path)
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in (*keys, *([pickled_key] if pickled_key else [])):
                if key not in npz.files:
                    raise MedalSInputError(path, key, f"missing; this file holds {', '.join(npz.files) or 'nothing'}")
            for key in keys:
                out[key] = npz[key]
        if pickled_key:
            with zipfile.ZipFile(path) as z:
                member = io.BytesIO(z.read(f"{pickled_key}.npy"))
            version = np.lib.format.read_magic(member)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = header(member)
            if not dtype.hasobject:
                member.seek(0)
                out[pickled_key] = np.lib.format.read_array(member, allow_pickle=False)
            else:
                try:
                    value = _PromptDictUnpickler(member).load()
                except pickle.UnpicklingError:
                    raise
                except Exception as e:  # a malformed pickle may fail anywhere inside numpy's rebuilders
                    raise pickle.UnpicklingError(f"malformed pickle ({type(e).__name__}: {e})") from None
                if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
                    value = value.item()
                if not _plain_data(value):
                    raise MedalSInputError(path, pickled_key, "holds something other than plain data (dict, list, "
                                                              "str, numbers); nothing else is loaded from a file")
                out[pickled_key] = value
    except MedalSInputError:
        raise
    except pickle.UnpicklingError as e:
        raise MedalSInputError(path, pickled_key, f"not loaded: {e} (only a dict of texts and numbers is "
                                                  f"accepted; pickled code is never run)") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise MedalSInputError(path, "<file>", f"is not a readable npz file (damaged or truncated?): {e}") from None
    return out


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions a plain write would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode())


@contextmanager
def atomic_directory(final_path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final_path``, on error it is removed.

    With ``overwrite=False`` an existing ``final_path`` is an error raised before anything is written.
    """
    final_path = Path(final_path)
    if final_path.exists() and not overwrite:
        raise FileExistsError(f"{final_path} already exists; remove it or choose another dataset id")
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        if final_path.exists():
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_nifti(array, spacing_zyx, path: str | os.PathLike) -> None:
    """Write a (z, y, x) array as compressed NIfTI with its spacing (mm, array axis order) - the one writer the
    dataset builders use; they write into a temporary folder that is renamed into place."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    sitk.WriteImage(image, str(path), useCompression=True)
