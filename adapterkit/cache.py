"""On-disk embedding cache: every unique text is embedded by a base model once, ever.

Entries are keyed by (model identity, sha256 of kind + text), so the query instruction, the model's
settings and the text all take part. Each finished batch is committed at once (SQLite, WAL), so an
interrupted run keeps everything embedded before the interruption.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.data.files import user_cache_dir
from adapterkit.embeddings import model_identity
from adapterkit.errors import AdapterkitError

KINDS = ("query", "text")
logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$ADAPTERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adapterkit``, else ``~/.cache/adapterkit``."""
    if os.environ.get("ADAPTERKIT_CACHE_DIR"):
        return Path(os.environ["ADAPTERKIT_CACHE_DIR"])
    return user_cache_dir()


class NonFiniteEmbeddingError(AdapterkitError, ValueError):
    """The base model returned NaN or inf for some text."""


class EmbeddingCacheError(AdapterkitError, RuntimeError):
    """The cache file cannot be opened or read."""


class EmbeddingCache:
    """A SQLite file of float32 vectors.

    Args:
        path: folder for ``embeddings.sqlite``; default ``default_cache_dir()``.

    A folder that cannot be written (a shared, read-only cache) is opened read-only: texts found in
    it are served, others are embedded but not stored (with a warning). Rows are checked when read
    back: one that is not a whole float32 vector or not finite counts as missing and is embedded
    again. ``stats`` counts hits, misses and such bad rows since creation.
    """

    def __init__(self, path: Optional[os.PathLike | str] = None) -> None:
        self.folder = Path(path) if path is not None else default_cache_dir()
        self.file = self.folder / "embeddings.sqlite"
        self._lock = threading.Lock()
        self.read_only = False
        self.stats = {"hits": 0, "misses": 0, "bad_rows": 0}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.folder, os.W_OK) and (not self.file.exists() or os.access(self.file, os.W_OK))
        except OSError:
            writable = False
        try:
            if writable:
                self._db = sqlite3.connect(self.file, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, key BLOB, vec BLOB, PRIMARY KEY (model, key))")
                self._db.commit()
            else:
                self._open_read_only()
            self._db.execute("SELECT model, key, vec FROM emb LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise EmbeddingCacheError(
                f"The embedding cache {self.file} cannot be read ({exc}). Delete that file (every embedding is "
                "recomputed on demand) or point ADAPTERKIT_CACHE_DIR at another folder."
            ) from exc

    def _open_read_only(self) -> None:
        if not self.file.is_file():
            raise EmbeddingCacheError(
                f"The cache folder {self.folder} is not writable and holds no cache: "
                "make it writable or point ADAPTERKIT_CACHE_DIR elsewhere."
            )
        self.read_only = True
        uri = self.file.resolve().as_uri()
        try:
            self._db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
            self._db.execute("SELECT 1 FROM emb LIMIT 1").fetchall()
        except sqlite3.OperationalError:  # a WAL file needs a writable folder: read the file as it is
            self._db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)

    @staticmethod
    def key(kind: str, text: str) -> bytes:
        try:
            return hashlib.sha256(f"{kind}\x00{text}".encode("utf-8")).digest()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"The {kind} {text[:60]!r} holds a lone surrogate (broken Unicode) and cannot be embedded; "
                "fix the text, e.g. text.encode('utf-8', 'replace').decode()."
            ) from exc

    def get_many(self, model: str, keys: Sequence[bytes]) -> Dict[bytes, np.ndarray]:
        """The vectors stored for ``keys``; rows that are not whole, finite float32 vectors are left out."""
        found: Dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                try:
                    rows = self._db.execute(f"SELECT key, vec FROM emb WHERE model=? AND key IN ({marks})", [model, *chunk]).fetchall()
                except sqlite3.DatabaseError as exc:
                    raise EmbeddingCacheError(
                        f"The embedding cache {self.file} cannot be read ({exc}). Delete that "
                        "file (every embedding is recomputed on demand)."
                    ) from exc
                for key, vec in rows:
                    if not isinstance(vec, bytes) or not vec or len(vec) % 4:
                        self.stats["bad_rows"] += 1
                        continue
                    array = np.frombuffer(vec, dtype=np.float32)
                    if not np.isfinite(array).all():
                        self.stats["bad_rows"] += 1
                        continue
                    found[bytes(key)] = array
        return found

    def put_many(self, model: str, items: Dict[bytes, np.ndarray]) -> None:
        if self.read_only:
            if not getattr(self, "_warned", False):
                logger.warning("The embedding cache %s is read-only: new embeddings are not stored.", self.file)
                self._warned = True
            return
        rows = [(model, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)
            self._db.commit()

    def move(self, source: str, target: str) -> int:
        """Give every entry of identity ``source`` to identity ``target`` (replacing its entries of the same
        keys), in one transaction; returns how many moved. Stored vectors are written under a staging
        identity and moved once the store passed its check (``cache_stored_vectors``)."""
        if self.read_only:
            return 0
        with self._lock:
            with self._db:  # one transaction: all of them or none
                moved = self._db.execute("INSERT OR REPLACE INTO emb SELECT ?, key, vec FROM emb WHERE model=?", (target, source)).rowcount
                self._db.execute("DELETE FROM emb WHERE model=?", (source,))
        return moved

    def drop(self, model: str) -> None:
        """Remove every entry of identity ``model``."""
        if self.read_only:
            return
        with self._lock:
            with self._db:
                self._db.execute("DELETE FROM emb WHERE model=?", (model,))

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
    purpose: str = "",
) -> np.ndarray:
    """Embed ``texts`` with ``model`` through the cache; return a float32 array ``(len(texts), dim)``.

    Args:
        model: any LlamaIndex ``BaseEmbedding`` (treated as a black box).
        texts: documents (``kind="text"``) or queries (``kind="query"``: the model adds its instruction).
        cache: an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``.
        batch_size: texts per model call and per commit; default: the model's ``embed_batch_size`` × 4.
        show_progress: a tqdm bar over the texts that are not cached yet.
        purpose: what the texts are, for the bar (e.g. ``"sentence memory keys"``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    store = get_cache(cache)
    ident = model_identity(model)
    keys = [EmbeddingCache.key(kind, t) for t in texts]
    unique = dict(zip(keys, texts))  # each distinct text is embedded once
    found = store.get_many(ident, list(unique))
    common = _common_length(found)
    damaged = [k for k, v in found.items() if len(v) != common]
    for k in damaged:  # a stored row of another length than the rest: embed it again
        del found[k]
    store.stats["bad_rows"] += len(damaged)
    todo = [(k, t) for k, t in unique.items() if k not in found]
    # Texts of similar length share a call: less padding, and a model that batches only equal token counts
    # (the offline default) gets full batches. Measured on Uber's sentences: 121 s in corpus order, 86 s sorted.
    count = getattr(model, "token_lengths", None)
    lengths = count([t for _, t in todo]) if callable(count) and todo else [len(t) for _, t in todo]
    todo = [kt for _, kt in sorted(zip(lengths, todo), key=lambda pair: pair[0])]
    store.stats["hits"] += len(unique) - len(todo)
    store.stats["misses"] += len(todo)
    step = batch_size or max(1, model.embed_batch_size * 4)
    dim = None
    with tqdm(
        total=len(todo),
        desc="Embedding " + (purpose or ("queries" if kind == "query" else "texts")),
        unit=kind,
        disable=not show_progress or not todo,
    ) as bar:
        while todo:
            for start in range(0, len(todo), step):
                batch = todo[start : start + step]
                vecs = _as_matrix(call_model(model, [t for _, t in batch], kind), len(batch), model)
                if dim is not None and vecs.shape[1] != dim:
                    raise ValueError(f"{model.class_name()} returned {vecs.shape[1]}-dimensional vectors after {dim}-dimensional ones.")
                dim = vecs.shape[1]
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
            # A stored row whose length is not the model's (or, with nothing new, not the common one) is damaged.
            dim = dim or _common_length(found)
            todo = [(k, unique[k]) for k, v in found.items() if len(v) != dim]
            if todo:
                logger.warning("%d rows of %s have the wrong length; embedding them again.", len(todo), store.file)
                store.stats["bad_rows"] += len(todo)
                bar.total += len(todo)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[k] for k in keys])


def _common_length(vectors: Dict[bytes, np.ndarray]) -> Optional[int]:
    if not vectors:
        return None
    lengths, counts = np.unique([len(v) for v in vectors.values()], return_counts=True)
    return int(lengths[np.argmax(counts)])


def _as_matrix(vectors: Any, n: int, model: BaseEmbedding) -> np.ndarray:
    """The model's answer as an ``(n, d)`` float32 matrix, or an error that says what came back."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        lengths = sorted({len(v) for v in vectors}) if isinstance(vectors, (list, tuple)) else "?"
        raise ValueError(
            f"{model.class_name()} returned vectors of different lengths ({lengths}) for {n} texts; "
            "every vector must have the same dimension."
        ) from exc
    if matrix.ndim != 2 or len(matrix) != n or matrix.shape[1] == 0:
        raise ValueError(f"{model.class_name()} returned {matrix.shape} for {n} texts; expected one vector each.")
    return matrix


def embed_once(
    model: BaseEmbedding,
    datasets: Iterable[EmbeddingQAFinetuneDataset],
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Embed every query and chunk of ``datasets`` with the base model, through the disk cache.

    Texts already cached are not embedded again, so a second run returns at once. Returns how many
    distinct texts of each kind the datasets hold, and the embedding dimension (``"dim"``).
    """
    queries: List[str] = []
    chunks: List[str] = []
    for ds in datasets:
        queries.extend(ds.queries.values())
        chunks.extend(ds.corpus.values())
    queries, chunks = list(dict.fromkeys(queries)), list(dict.fromkeys(chunks))
    docs = embed_texts(model, chunks, "text", cache=cache, show_progress=show_progress)
    embed_texts(model, queries, "query", cache=cache, show_progress=show_progress)
    return {"chunks": len(chunks), "queries": len(queries), "dim": int(docs.shape[1]) if len(chunks) else 0}
