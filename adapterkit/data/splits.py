"""Held-out splits: the one rule for how many rows are held out, and the dataset splits built on it."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset


def held_out(n: int, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``(kept, held)`` row indices: a random ``round(n * fraction)`` of ``n`` rows held out.

    Every held-out split in the package uses this rule: a positive fraction holds out at least one
    row and keeps at least one (nothing is held out of a single row); ``fraction=0`` holds out none.
    Both parts come in the random order drawn from ``rng``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"A held-out fraction must be in [0, 1), not {fraction}.")
    order = rng.permutation(n)
    count = min(n - 1, max(1, int(round(n * fraction)))) if fraction > 0 and n > 1 else 0
    return order[count:], order[:count]


def split_queries(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """A random 80/20 split of the questions over the same corpus: (training part, held-out part)."""
    ids = list(dataset.queries)
    kept, held = held_out(len(ids), 0.2, np.random.default_rng(seed))
    return dataset.with_queries([ids[i] for i in kept]), dataset.with_queries([ids[i] for i in held])


def split_corpus(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """Random halves of the chunks, each with its own questions: (one half, the other)."""
    chunks = list(dataset.corpus)
    order = [chunks[i] for i in np.random.default_rng(seed).permutation(len(chunks))]
    return dataset.restrict(order[: len(order) // 2]), dataset.restrict(order[len(order) // 2 :])
