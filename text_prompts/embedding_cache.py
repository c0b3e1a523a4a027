"""On-disk cache of text embeddings keyed by (encoder id, exact text).

One SQLite file holds every encoder's embeddings; SQLite makes concurrent readers/writers (several training
workers, parallel predictions) safe and every insert atomic. The dimension is stored per entry so a cache can
never hand out a vector of the wrong size for an encoder.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

CACHE_ENV = "nnUNet_medals_cache"


def default_cache_dir() -> Path:
    """``$nnUNet_medals_cache`` if set, else ``~/.cache/nnunetv2_medals``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "nnunetv2_medals"


class EmbeddingCache:
    """Persistent map ``(encoder_id, text) -> float32 vector``.

    >>> cache = EmbeddingCache(tmp_dir)
    >>> cache.put("enc@abc", ["liver"], np.ones((1, 4), np.float32))
    >>> cache.get("enc@abc", ["liver", "spleen"])   # {"liver": array([1., 1., 1., 1.])}
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.cache_dir / "embeddings.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS embeddings (encoder_id TEXT NOT NULL, text TEXT NOT NULL, "
                    "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (encoder_id, text))")
        return con

    def get(self, encoder_id: str, texts: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The cached vectors among ``texts`` (missing ones are absent from the result)."""
        if not texts or not self.path.exists():
            return {}
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(texts))
        with self._connect() as con:
            for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                chunk = unique[start:start + 500]
                rows = con.execute(f"SELECT text, dim, vector FROM embeddings WHERE encoder_id = ? AND text IN "
                                   f"({','.join('?' * len(chunk))})", [encoder_id, *chunk]).fetchall()
                for text, d, blob in rows:
                    if dim is not None and d != dim:
                        raise ValueError(f"{self.path}: cached embedding of {text!r} for encoder {encoder_id} has "
                                         f"dim {d}, expected {dim}; delete the cache file to rebuild it")
                    out[text] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put(self, encoder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"expected ({len(texts)}, dim) vectors, got shape {vectors.shape}")
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                            [(encoder_id, t, vectors.shape[1], v.tobytes()) for t, v in zip(texts, vectors)])
