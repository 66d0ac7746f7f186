"""On-disk embedding cache: every unique text is embedded by a base model once, ever.

Entries are keyed by (model identity, sha256 of kind + text), so the query instruction, the model's
settings and the text all take part. Each finished batch is committed at once (SQLite, WAL), so an
interrupted run keeps everything embedded before the interruption.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.embeddings import model_identity

KINDS = ("query", "text")


def default_cache_dir() -> Path:
    """``$ADAPTERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adapterkit``, else ``~/.cache/adapterkit``."""
    if os.environ.get("ADAPTERKIT_CACHE_DIR"):
        return Path(os.environ["ADAPTERKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adapterkit"


class NonFiniteEmbeddingError(ValueError):
    """The base model returned NaN or inf for some text."""


class EmbeddingCache:
    """A SQLite file of float32 vectors.

    Args:
        path: folder for ``embeddings.sqlite``; default ``default_cache_dir()``.

    ``stats`` counts hits and misses since creation (tests and benchmarks read it).
    """

    def __init__(self, path: Optional[os.PathLike | str] = None) -> None:
        self.folder = Path(path) if path is not None else default_cache_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = self.folder / "embeddings.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.file, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, key BLOB, vec BLOB, PRIMARY KEY (model, key))")
        self._db.commit()
        self.stats = {"hits": 0, "misses": 0}

    @staticmethod
    def key(kind: str, text: str) -> bytes:
        return hashlib.sha256(f"{kind}\x00{text}".encode("utf-8")).digest()

    def get_many(self, model: str, keys: Sequence[bytes]) -> Dict[bytes, np.ndarray]:
        found: Dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, vec FROM emb WHERE model=? AND key IN ({marks})", [model, *chunk])
                for key, vec in rows:
                    found[bytes(key)] = np.frombuffer(vec, dtype=np.float32)
        return found

    def put_many(self, model: str, items: Dict[bytes, np.ndarray]) -> None:
        rows = [(model, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]


_DEFAULT_CACHES: Dict[Path, EmbeddingCache] = {}


def get_cache(cache: Optional[EmbeddingCache | os.PathLike | str] = None) -> EmbeddingCache:
    """The cache object for ``cache`` (an ``EmbeddingCache``, a folder, or None for the default folder)."""
    if isinstance(cache, EmbeddingCache):
        return cache
    folder = Path(cache) if cache is not None else default_cache_dir()
    if folder not in _DEFAULT_CACHES:
        _DEFAULT_CACHES[folder] = EmbeddingCache(folder)
    return _DEFAULT_CACHES[folder]


def call_model(model: BaseEmbedding, texts: List[str], kind: str) -> List[List[float]]:
    """One uncached batch call: documents through ``_get_text_embeddings``, queries batched when the model can."""
    if kind == "text":
        return model._get_text_embeddings(texts)
    batched = getattr(model, "_get_query_embeddings", None)
    return batched(texts) if batched is not None else [model._get_query_embedding(t) for t in texts]


def embed_texts(
    model: BaseEmbedding,
    texts: Sequence[str],
    kind: str = "text",
    cache: Optional[EmbeddingCache | os.PathLike | str] = None,
    batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with ``model`` through the cache; return a float32 array ``(len(texts), dim)``.

    Args:
        model: any LlamaIndex ``BaseEmbedding`` (treated as a black box).
        texts: documents (``kind="text"``) or queries (``kind="query"``: the model adds its instruction).
        cache: an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``.
        batch_size: texts per model call and per commit; default: the model's ``embed_batch_size`` × 4.
        show_progress: a tqdm bar over the texts that are not cached yet.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    store = get_cache(cache)
    ident = model_identity(model)
    keys = [EmbeddingCache.key(kind, t) for t in texts]
    unique = dict(zip(keys, texts))  # each distinct text is embedded once
    found = store.get_many(ident, list(unique))
    todo = [(k, t) for k, t in unique.items() if k not in found]
    store.stats["hits"] += len(unique) - len(todo)
    store.stats["misses"] += len(todo)
    step = batch_size or max(1, model.embed_batch_size * 4)
    with tqdm(total=len(todo), desc=f"Embedding {kind}s", unit=kind, disable=not show_progress or not todo) as bar:
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            vecs = np.asarray(call_model(model, [t for _, t in batch], kind), dtype=np.float32)
            if vecs.ndim != 2 or len(vecs) != len(batch):
                raise ValueError(f"{model.class_name()} returned {vecs.shape} for {len(batch)} texts; expected one vector each.")
            bad = np.where(~np.isfinite(vecs).all(axis=1))[0]
            if len(bad):
                text = batch[bad[0]][1]
                raise NonFiniteEmbeddingError(
                    f"{model.class_name()} returned a non-finite (NaN/inf) embedding for {kind} {text[:80]!r}. "
                    "Check the model (fp16 overflow, empty input) or drop that text; batches embedded "
                    "before this one are cached."
                )
            new = {k: v for (k, _), v in zip(batch, vecs)}
            store.put_many(ident, new)
            found.update(new)
            bar.update(len(batch))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[k] for k in keys])
