"""Ranking metrics, one implementation: exact search, ranks of relevant documents, and hit/MRR/nDCG/AP.

Hit-rate and MRR follow the LlamaIndex walkthrough: a hit when a relevant doc is in the top k,
reciprocal rank of the first relevant doc within the top k, else 0. Everything that scores a model
(``evaluate``, held-out selection, vector-store results, benchmarks) goes through these functions.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), as float32."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def exact_search(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    relevant: Sequence[Sequence[int]],
    query_chunk: int = 1024,
    doc_chunk: int = 65536,
) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    """Cosine top-``k`` and the rank of every relevant doc, in memory bounded by the chunk sizes.

    Args:
        queries: ``(Q, d)`` query vectors.
        docs: ``(N, d)`` document vectors.
        k: how many results to keep per query.
        relevant: for each query, the row indices of its relevant docs.

    Returns:
        ``(top_idx (Q, k), top_scores (Q, k), ranks)`` where ``ranks[i]`` holds the 1-based rank of
        each of query ``i``'s relevant docs.

    Ties are ranked pessimistically: a relevant doc is placed after every other doc with the same
    score (relevant docs tied with each other do not push each other down). A non-finite score (a
    NaN or infinite query or document vector) counts as the lowest possible, so a query whose vector
    is not finite misses: a diverged model can never look good.
    """
    k = min(k, len(docs))
    top_idx = np.zeros((len(queries), k), dtype=np.int64)
    top_scores = np.zeros((len(queries), k), dtype=np.float32)
    ranks: List[np.ndarray] = []
    with torch.no_grad():
        for qs in range(0, len(queries), query_chunk):
            q = _normalise(torch.as_tensor(queries[qs : qs + query_chunk], dtype=torch.float32))
            rel = relevant[qs : qs + query_chunk]
            width = max(len(r) for r in rel)
            rel_idx = torch.zeros(len(q), width, dtype=torch.long)
            rel_mask = torch.zeros(len(q), width, dtype=torch.bool)
            for row, r in enumerate(rel):
                rel_idx[row, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
                rel_mask[row, : len(r)] = True
            rel_vecs = _normalise(torch.as_tensor(docs[rel_idx.flatten().numpy()], dtype=torch.float32))
            rel_scores = finite_scores((rel_vecs.view(len(q), width, -1) * q[:, None, :]).sum(-1))
            # Relevant docs rank among themselves by score (ties do not count)...
            beaten = ((rel_scores[:, None, :] > rel_scores[:, :, None]) & rel_mask[:, None, :]).sum(-1)
            best_s = torch.full((len(q), k), -math.inf)
            best_i = torch.zeros((len(q), k), dtype=torch.long)
            for ds in range(0, len(docs), doc_chunk):
                d = _normalise(torch.as_tensor(docs[ds : ds + doc_chunk], dtype=torch.float32))
                s = finite_scores(q @ d.T)
                # ...and every other doc at or above a relevant doc's score counts against it.
                local = rel_idx - ds
                inside = rel_mask & (local >= 0) & (local < s.shape[1])
                is_rel = torch.zeros_like(s, dtype=torch.bool)
                is_rel[torch.arange(len(q))[:, None].expand_as(local)[inside], local[inside]] = True
                beaten += ((s[:, None, :] >= rel_scores[:, :, None]) & ~is_rel[:, None, :]).sum(-1)
                best_s, best_i = merge_top_k(best_s, best_i, s, ds)
            top_idx[qs : qs + len(q)] = best_i.numpy()
            top_scores[qs : qs + len(q)] = best_s.numpy()
            rank_rows = (beaten + 1).numpy()
            ranks.extend(rank_rows[row][rel_mask[row].numpy()] for row in range(len(q)))
    return top_idx, top_scores, ranks


def finite_scores(scores: torch.Tensor) -> torch.Tensor:
    """Scores with NaN and infinities replaced by -inf: the lowest, never a hit."""
    return torch.where(torch.isfinite(scores), scores, torch.tensor(-math.inf))


def reciprocal_rank(first_rank: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """1 / the rank of the first relevant doc, 0 past ``k``: the per-query term of MRR@k."""
    first_rank = np.asarray(first_rank, dtype=float)
    return np.where(first_rank <= k, 1.0 / first_rank, 0.0)


def metrics_at_k(ranks: Sequence[np.ndarray], k: int, gains: Optional[Sequence[Optional[np.ndarray]]] = None) -> Dict[str, np.ndarray]:
    """Hit, MRR, recall, nDCG and AP at ``k`` for many queries at once.

    Args:
        ranks: per query, the 1-based ranks of its relevant docs.
        k: cut-off.
        gains: per query, the graded relevance of each relevant doc (None: 1 each), used by nDCG.

    Returns:
        ``{"is_hit", "mrr", "recall", "ndcg", "ap"}``, each an array with one value per query.
    """
    n = len(ranks)
    width = max((len(r) for r in ranks), default=1)
    R = np.full((n, width), np.inf)
    G = np.zeros((n, width))
    for i, r in enumerate(ranks):
        R[i, : len(r)] = r
        g = None if gains is None else gains[i]
        G[i, : len(r)] = 1.0 if g is None else g
    n_rel = np.isfinite(R).sum(1)
    first = R.min(1)
    in_k = R <= k
    # AP: precision at each relevant doc inside the top k, averaged over min(#relevant, k).
    order = np.argsort(R, axis=1)
    Rs = np.take_along_axis(R, order, 1)
    hits = Rs <= k
    precision = np.where(hits, np.cumsum(hits, 1) / np.where(hits, Rs, 1), 0.0)
    discount = np.log2(np.where(in_k, R, 1) + 1)
    dcg = np.where(in_k, (2**G - 1) / discount, 0.0).sum(1)
    ideal = -np.sort(-G, axis=1)[:, :k]
    idcg = ((2**ideal - 1) / np.log2(np.arange(2, ideal.shape[1] + 2))).sum(1)
    return {
        "is_hit": first <= k,
        "mrr": reciprocal_rank(first, k),
        "recall": in_k.sum(1) / n_rel,
        "ndcg": np.divide(dcg, idcg, out=np.zeros(n), where=idcg > 0),
        "ap": precision.sum(1) / np.minimum(n_rel, k),
    }


def rank_metrics(ranks: np.ndarray, k: int, gains: Optional[np.ndarray] = None) -> Dict[str, float]:
    """``metrics_at_k`` for one query, as plain Python values."""
    m = metrics_at_k([np.asarray(ranks)], k, None if gains is None else [np.asarray(gains, dtype=float)])
    return {"is_hit": bool(m["is_hit"][0]), **{key: float(v[0]) for key, v in m.items() if key != "is_hit"}}


def merge_top_k(best_s: torch.Tensor, best_i: torch.Tensor, scores: torch.Tensor, offset: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The top ``best_s.shape[1]`` of the running best and a new block of ``scores`` whose columns start at ``offset``.

    Every exact top-k in adapterkit (``exact_search``, stored vectors, memory keys) merges through here,
    so one rule holds for all: a NaN or infinite score (+inf included) counts as -inf, the lowest.
    """
    scores = finite_scores(scores)
    k = best_s.shape[1]
    s_top, i_top = scores.topk(min(k, scores.shape[1]), dim=1)
    merged_s, merged_i = torch.cat([best_s, s_top], dim=1), torch.cat([best_i, i_top + offset], dim=1)
    best_s, pos = merged_s.topk(k, dim=1)
    return best_s, merged_i.gather(1, pos)


def paired_ranks(base: pd.DataFrame, other: pd.DataFrame, column: str = "rank") -> pd.DataFrame:
    """Two ``evaluate`` results side by side per query: ``query_id, <column>_base, <column>_other``."""
    return base[["query_id", column]].merge(other[["query_id", column]], on="query_id", suffixes=("_base", "_other"))


def paired_bootstrap(
    base: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> Tuple[float, float, float]:
    """Mean of ``other - base`` over queries and its bootstrap interval (queries resampled with replacement).

    Returns ``(difference, low, high)``; the interval excludes 0 when the change is clear at ``level``.
    """
    diff = np.asarray(other, dtype=float) - np.asarray(base, dtype=float)
    if not len(diff):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(reps, len(diff)))].mean(1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
