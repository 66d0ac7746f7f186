"""What each training step sees: groups of cached embeddings, batches, and the negatives of each query.

A ``TrainingGroup`` is one corpus with its (query, positive chunk) pairs as arrays; the training data
is one group (the labelled pairs) or two (plus label-free pseudo-queries of a target corpus). A batch
never mixes groups, so "corpus" negatives are always the query's own corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from adapterkit.data.splits import held_out

NEGATIVES = ("corpus", "in_batch")


@dataclass
class TrainingGroup:
    """One corpus with its training pairs, as arrays (the unit for corpus-wide negatives).

    Args:
        name: ``"train"`` or ``"unlabeled"``.
        queries: ``(n, d)`` base query embeddings.
        positives: ``(n,)`` row of each query's positive in ``docs``.
        docs: ``(m, d)`` base chunk embeddings.
        other_relevant: further relevant rows per query (kept out of its negatives).
    """

    name: str
    queries: np.ndarray
    positives: np.ndarray
    docs: np.ndarray
    other_relevant: List[List[int]]
    hard: Optional[np.ndarray] = None  # (n, h) mined hard-negative rows per query, for in-batch training
    train_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def split(self, val_fraction: float, rng: np.random.Generator) -> None:
        """Hold out whole chunks (all their queries) so validation never sees a training chunk."""
        chunks = np.unique(self.positives)
        held = set(chunks[held_out(len(chunks), val_fraction, rng)[1]].tolist())
        is_val = np.array([p in held for p in self.positives], dtype=bool)
        self.train_idx, self.val_idx = np.where(~is_val)[0], np.where(is_val)[0]

    def all_rows(self) -> np.ndarray:
        return np.arange(len(self.positives))


def mine_hard_negatives(group: TrainingGroup, k: int, margin: float = 0.05) -> np.ndarray:
    """The ``k`` chunks the base model ranks highest for each query, its relevant chunks excluded.

    False-negative guard: a chunk scoring within ``margin`` of the query's positive (cosine) is
    skipped, since a chunk that close is as likely an unlabelled answer as a wrong one.
    """
    q = torch.nn.functional.normalize(torch.as_tensor(group.queries), dim=-1)
    d = torch.nn.functional.normalize(torch.as_tensor(group.docs), dim=-1)
    scores = q @ d.T
    rows = torch.arange(len(q))
    pos = scores[rows, torch.as_tensor(group.positives)]
    scores[rows, torch.as_tensor(group.positives)] = -math.inf
    for i, extra in enumerate(group.other_relevant):
        scores[i, extra] = -math.inf
    scores[scores >= (pos - margin)[:, None]] = -math.inf
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()


def no_duplicate_batches(positives: Union[Sequence[int], Dict[int, int]], batch_size: int, order: Sequence[int]) -> List[List[int]]:
    """Split ``order`` into batches in which no positive doc appears twice (it would be its own negative)."""
    remaining = list(order)
    batches: List[List[int]] = []
    while remaining:
        batch, seen, skipped, j = [], set(), [], 0
        for j, i in enumerate(remaining):  # stops once the batch is full: linear in the data overall
            if positives[i] in seen:
                skipped.append(i)
                continue
            batch.append(i)
            seen.add(positives[i])
            if len(batch) == batch_size:
                break
        batches.append(batch)
        remaining = skipped + remaining[j + 1 :]
    return batches


def epoch_batches(
    groups: Sequence[TrainingGroup],
    rows: Sequence[np.ndarray],
    batch_size: int,
    shuffle: bool,
    no_duplicates: bool,
    generator: torch.Generator,
) -> List[Tuple[int, List[int]]]:
    """``[(group index, [query rows])]`` for one epoch over ``rows[g]`` of each group, groups interleaved at random."""
    batches: List[Tuple[int, List[int]]] = []
    for g, (group, idx) in enumerate(zip(groups, rows)):
        order = idx[torch.randperm(len(idx), generator=generator).numpy()] if shuffle else idx
        if no_duplicates:
            found = no_duplicate_batches({i: group.positives[i] for i in idx}, batch_size, order.tolist())
        else:
            found = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        batches.extend((g, b) for b in found)
    if shuffle and len(groups) > 1:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    return batches


def count_steps(
    groups: Sequence[TrainingGroup], rows: Sequence[np.ndarray], batch_size: int, shuffle: bool, no_duplicates: bool, seed: int, epochs: int
) -> int:
    """The number of batches ``epochs`` epochs will have, drawn exactly as training draws them.

    Batch counts can differ between epochs (``no_duplicates`` defers a repeated positive to a later
    batch), so the learning-rate schedule needs every epoch's count, not the first one's times ``epochs``.
    """
    generator = torch.Generator().manual_seed(seed)
    return sum(len(epoch_batches(groups, rows, batch_size, shuffle, no_duplicates, generator)) for _ in range(epochs))


def candidates(
    group: TrainingGroup, rows: List[int], negatives: str, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(doc rows, labels, mask)`` for a batch: the documents each query is scored against, the column
    of each query's positive, and True where a column is another relevant document of that query.

    ``"corpus"``: every chunk of the group. ``"in_batch"``: the batch's positives (column ``r`` is query
    ``r``'s), then its mined hard negatives. A column counts as a negative of query ``r`` unless it
    holds one of ``r``'s relevant chunks; ``r``'s label column is never masked. One exception keeps
    LlamaIndex's in-batch recipe as it is: another query's positive column that holds the same chunk
    as ``r``'s positive stays a negative, as in sentence-transformers' loss (``no_duplicates``, the
    default, keeps such pairs out of one batch).
    """
    relevant = [{int(group.positives[i]), *group.other_relevant[i]} for i in rows]
    if negatives == "corpus":
        cand = np.arange(len(group.docs))
        labels = torch.as_tensor(group.positives[rows], device=device)
    else:
        cand = np.asarray([group.positives[i] for i in rows] + ([] if group.hard is None else group.hard[rows].ravel().tolist()))
        labels = torch.arange(len(rows), device=device)
    label_cols = labels.cpu().numpy()
    mask = np.zeros((len(rows), len(cand)), dtype=bool)
    for r, rel in enumerate(relevant):
        if negatives == "corpus":  # column j is chunk j: only the query's other relevant chunks are masked
            mask[r, list(rel)] = True
        else:
            mask[r] = np.isin(cand, list(rel))
            mask[r, : len(rows)] &= cand[: len(rows)] != cand[r]
        mask[r, label_cols[r]] = False
    return torch.as_tensor(cand, device=device), labels, (torch.as_tensor(mask, device=device) if mask.any() else None)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate of optimiser step ``step`` (from 0) as a share of the configured one: a linear
    warm-up over ``warmup`` steps, then a linear decay to 0 at ``total``."""
    return (step + 1) / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))
