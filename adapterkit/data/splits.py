"""Held-out splits of a dataset: a fifth of its questions, or a fifth of its chunks with their questions."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset


def split_queries(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """A random 80/20 split of the questions over the same corpus: (training part, held-out part)."""
    order = [list(dataset.queries)[i] for i in np.random.default_rng(seed).permutation(len(dataset.queries))]
    held = len(order) // 5
    return dataset.with_queries(order[held:]), dataset.with_queries(order[:held])


def split_corpus(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """Random halves of the chunks, each with its own questions: (one half, the other)."""
    chunks = list(dataset.corpus)
    order = [chunks[i] for i in np.random.default_rng(seed).permutation(len(chunks))]
    return dataset.restrict(order[: len(order) // 2]), dataset.restrict(order[len(order) // 2 :])
