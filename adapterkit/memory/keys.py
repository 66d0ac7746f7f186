"""Top-k lookup of a memory's keys: exact for small memories, an approximate (faiss) index for large ones.

``ExactIndex`` scores every key (a matrix product in bounded blocks). ``IVFIndex`` is faiss's
inverted-file index with 8-bit scalar quantization (``IVF<nlist>,SQ8``, inner product on unit
vectors): each key costs ``d`` bytes instead of ``4 d``, and a query scans ``nprobe`` of ``nlist``
lists instead of every key. ``benchmarks/bench_memory.py`` measures its recall against exact.

Also the checks every memory's keys, chunks and pull pass when built or loaded (``first_non_finite_row``,
``pull_ok``): a NaN or an overflowing pull would serve NaN query vectors.
"""

from __future__ import annotations

import logging
import math
from numbers import Real
from typing import Any, Optional, Protocol, Tuple

import numpy as np
import torch

from adapterkit.metrics import merge_top_k

INDEX_KINDS = ("auto", "exact", "ivf")
EXACT_UP_TO = 200_000  # keys: "auto" looks larger memories up with an IVF index (faiss installed)
MAX_PULL = 1e6  # weight and temperature: far past any useful pull; larger ones only overflow float32 sums
logger = logging.getLogger(__name__)


class KeyIndex(Protocol):
    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(cosine similarities, key rows)``, each ``(Q, k)``, best first, for unit-length ``queries``.

        A row of -1 (similarity -inf) fills places an approximate index found nothing for.
        """


class ExactIndex:
    """Every key scored by a matrix product, in blocks of at most 16M scores (bounded memory)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        q = torch.as_tensor(queries, dtype=torch.float32)
        best_s = torch.full((len(q), k), -math.inf)
        best_i = torch.full((len(q), k), -1, dtype=torch.long)
        block = max(k, (1 << 24) // max(1, len(q)))
        with torch.no_grad():
            for start in range(0, len(self.keys), block):
                keys = torch.from_numpy(np.array(self.keys[start : start + block], dtype=np.float32))  # a copy: keys may be memory-mapped
                best_s, best_i = merge_top_k(best_s, best_i, q @ keys.T, start)
        return best_s.numpy(), best_i.numpy()


class IVFIndex:
    """faiss ``IVF<nlist>,SQ8`` over unit-length keys (inner product = cosine).

    Args:
        keys: ``(n, d)`` unit-length keys (a memory-mapped array is read in blocks).
        nlist: inverted lists; default ``2 * sqrt(n)`` (4,000 for 4M keys).
        nprobe: lists scanned per query (more: higher recall, slower).
        train_size: keys sampled to train the coarse quantizer and the scalar quantizer.
    """

    def __init__(self, keys: np.ndarray, nlist: Optional[int] = None, nprobe: int = 32, train_size: int = 200_000, seed: int = 0) -> None:
        faiss = _faiss()
        n, d = keys.shape
        nlist = nlist or max(1, min(n // 39, int(2 * math.sqrt(n))))
        train_size = max(train_size, 40 * nlist)  # k-means wants at least 39 training points per list
        self.index = faiss.index_factory(d, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False))
        self.index.train(np.ascontiguousarray(keys[sample], dtype=np.float32))
        for start in range(0, n, 262_144):
            self.index.add(np.ascontiguousarray(keys[start : start + 262_144], dtype=np.float32))
        self.index.nprobe = min(nprobe, nlist)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        sims, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.where(rows < 0, -np.inf, sims).astype(np.float32), rows

    @property
    def nbytes(self) -> int:
        """Bytes of the index's codes (the keys as stored in it)."""
        return int(self.index.ntotal * self.index.sa_code_size())


def first_non_finite_row(array: np.ndarray, block_bytes: int = 1 << 26) -> Optional[int]:
    """The first row of ``array`` (``(n, d)``) holding a NaN or inf, or None.

    Read in blocks of about ``block_bytes``, so a memory-mapped array of many GB is never in memory at once.
    """
    block = max(1, block_bytes // max(1, array[:1].nbytes))
    for start in range(0, len(array), block):
        rows = np.asarray(array[start : start + block])
        finite = np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


def pull_ok(weight: Any, temperature: Any) -> bool:
    """Whether ``0 <= weight <= MAX_PULL`` and ``0 < temperature <= MAX_PULL`` (real numbers; NaN and inf fail)."""
    numbers = all(isinstance(v, Real) and not isinstance(v, (bool, np.bool_)) for v in (weight, temperature))
    return numbers and 0 <= weight <= MAX_PULL and 0 < temperature <= MAX_PULL


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("index='ivf' needs faiss: pip install 'adapterkit[scale]' (faiss-cpu)") from exc
    return faiss


def make_index(keys: np.ndarray, kind: str = "auto", **options: Any) -> KeyIndex:
    """A ``KeyIndex`` over ``keys`` (``(n, d)``, unit length): ``"exact"``, ``"ivf"``, or ``"auto"``
    (exact up to ``EXACT_UP_TO`` keys, else IVF when faiss is installed)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown key index {kind!r}: use one of {INDEX_KINDS}.")
    if kind == "auto":
        kind = "exact" if len(keys) <= EXACT_UP_TO else "ivf"
        if kind == "ivf":
            try:
                _faiss()
            except ImportError:
                logger.warning("%d keys: exact lookup (slow); pip install 'adapterkit[scale]' for an IVF index.", len(keys))
                kind = "exact"
    return IVFIndex(keys, **options) if kind == "ivf" else ExactIndex(keys)
