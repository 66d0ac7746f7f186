"""Checks every memory applies to a batch of rows it is given: vectors, owners, and the cap on keys per chunk."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

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
    chunk_vectors = unit_rows(np.asarray(chunk_vectors, dtype=np.float32).reshape(len(chunk_ids), dim))
    key_vectors = unit_rows(np.asarray(key_vectors, dtype=np.float32).reshape(-1, key_dim))
    key_chunk = np.asarray(key_chunk, dtype=np.int64).reshape(len(key_vectors))
    if not (np.isfinite(chunk_vectors).all() and np.isfinite(key_vectors).all()):
        raise ValueError("Memory vectors must be finite (a NaN or inf came from the base model).")
    if len(key_chunk) and not 0 <= key_chunk.min() <= key_chunk.max() < len(chunk_ids):
        raise ValueError("key_chunk must hold positions in chunk_ids.")
    if len(set(map(str, chunk_ids))) != len(chunk_ids):
        raise ValueError("chunk_ids holds an id more than once: a chunk's keys go in one call.")
    check_keys_per_chunk(chunk_ids, key_chunk, max_keys)
    return chunk_vectors, key_vectors, key_chunk
