"""Checks every memory applies to a batch of rows it is given: vectors, owners, and the cap on keys per chunk."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from adapterkit.metrics import unit_rows


def check_max_keys(max_keys: Optional[int]) -> Optional[int]:
    """``max_keys`` as given, or a ``ValueError``: None (every sentence) or an int >= 1."""
    if max_keys is not None and (isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1):
        raise ValueError(f"max_keys caps the sentence keys per chunk: None (every sentence) or an int >= 1, got {max_keys!r}.")
    return max_keys


def check_keys_per_chunk(chunk_ids: Sequence[str], key_chunk: np.ndarray, max_keys: Optional[int]) -> None:
    """Refuse a chunk with more keys than the memory's cap."""
    if max_keys is None or not len(key_chunk):
        return
    counts = np.bincount(np.asarray(key_chunk, dtype=np.int64), minlength=len(chunk_ids))
    if counts.max() > max_keys:
        raise ValueError(
            f"Chunk {chunk_ids[int(counts.argmax())]!r} has {int(counts.max())} keys; this memory holds at most "
            f"max_keys={max_keys} per chunk (chunk_sentences(text, most={max_keys}))."
        )


def _unit(rows: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows, as ``unit_rows`` makes them; a row too long or too short for float32's squares (a norm
    beyond 1e18 or below 1e-12) is scaled in float64 first, so that it keeps its direction instead of becoming zeros."""
    norms = np.linalg.norm(rows.astype(np.float64), axis=1) if rows.size else np.zeros(len(rows))
    extreme = np.isfinite(norms) & (norms > 0) & ((norms > 1e18) | (norms < 1e-12))
    rows = rows.astype(np.float32)
    if extreme.any():
        rows[extreme] = (rows[extreme].astype(np.float64) / norms[extreme, None]).astype(np.float32)
    return unit_rows(rows)


def checked_rows(
    chunk_ids: Sequence[str],
    chunk_vectors: np.ndarray,
    key_vectors: np.ndarray,
    key_chunk: np.ndarray,
    dim: int,
    key_dim: int,
    max_keys: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-length float32 chunk and key vectors and int64 ``key_chunk``, or a ``ValueError`` that names the problem."""
    chunk_vectors = _unit(np.asarray(chunk_vectors).reshape(len(chunk_ids), dim))
    key_vectors = _unit(np.asarray(key_vectors).reshape(-1, key_dim))
    key_chunk = np.asarray(key_chunk, dtype=np.int64).reshape(len(key_vectors))
    if not (np.isfinite(chunk_vectors).all() and np.isfinite(key_vectors).all()):
        raise ValueError("Memory vectors must be finite (a NaN or inf came from the base model).")
    if len(key_chunk) and not 0 <= key_chunk.min() <= key_chunk.max() < len(chunk_ids):
        raise ValueError("key_chunk must hold positions in chunk_ids.")
    if len(set(map(str, chunk_ids))) != len(chunk_ids):
        raise ValueError("chunk_ids holds an id more than once: a chunk's keys go in one call.")
    check_keys_per_chunk(chunk_ids, key_chunk, max_keys)
    return chunk_vectors, key_vectors, key_chunk


def checked_hashes(chunk_ids: Sequence[str], text_hashes: Optional[Sequence[str]]) -> List[str]:
    """A text hash per chunk (``""`` for each when None: the first ``update`` re-embeds them), or a ``ValueError``."""
    if text_hashes is None:
        return [""] * len(chunk_ids)
    hashes = [str(h) for h in text_hashes]
    if len(hashes) != len(chunk_ids):
        raise ValueError(f"text_hashes holds {len(hashes)} hashes for {len(chunk_ids)} chunks: give one per chunk, in their order.")
    return hashes
