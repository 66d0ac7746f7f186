"""Retrieval metrics by exact search over cached embeddings, in batched matrix products.

``evaluate`` scores every query against the whole corpus (cosine), finds each relevant doc's rank
and the top-k, and returns one row per query. Hit-rate and MRR follow the walkthrough: a hit when a
relevant doc is in the top k, reciprocal rank of the first relevant doc within the top k, else 0.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.adapter_embedding import encode
from adapterkit.cache import EmbeddingCache, NonFiniteEmbeddingError
from adapterkit.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model


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
            rel_scores = _finite((rel_vecs.view(len(q), width, -1) * q[:, None, :]).sum(-1))
            # Relevant docs rank among themselves by score (ties do not count)...
            beaten = ((rel_scores[:, None, :] > rel_scores[:, :, None]) & rel_mask[:, None, :]).sum(-1)
            best_s = torch.full((len(q), k), -math.inf)
            best_i = torch.zeros((len(q), k), dtype=torch.long)
            for ds in range(0, len(docs), doc_chunk):
                d = _normalise(torch.as_tensor(docs[ds : ds + doc_chunk], dtype=torch.float32))
                s = _finite(q @ d.T)
                # ...and every other doc at or above a relevant doc's score counts against it.
                local = rel_idx - ds
                inside = rel_mask & (local >= 0) & (local < s.shape[1])
                is_rel = torch.zeros_like(s, dtype=torch.bool)
                is_rel[torch.arange(len(q))[:, None].expand_as(local)[inside], local[inside]] = True
                beaten += ((s[:, None, :] >= rel_scores[:, :, None]) & ~is_rel[:, None, :]).sum(-1)
                s_top, i_top = s.topk(min(k, s.shape[1]), dim=1)
                merged_s = torch.cat([best_s, s_top], dim=1)
                merged_i = torch.cat([best_i, i_top + ds], dim=1)
                best_s, pos = merged_s.topk(k, dim=1)
                best_i = merged_i.gather(1, pos)
            top_idx[qs : qs + len(q)] = best_i.numpy()
            top_scores[qs : qs + len(q)] = best_s.numpy()
            r = (beaten + 1).numpy()
            ranks.extend(r[row][rel_mask[row].numpy()] for row in range(len(q)))
    return top_idx, top_scores, ranks


def _finite(scores: torch.Tensor) -> torch.Tensor:
    """Scores with NaN and infinities replaced by -inf: the lowest, never a hit."""
    return torch.where(torch.isfinite(scores), scores, torch.tensor(-math.inf))


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
        "mrr": np.where(first <= k, 1.0 / first, 0.0),
        "recall": in_k.sum(1) / n_rel,
        "ndcg": np.divide(dcg, idcg, out=np.zeros(n), where=idcg > 0),
        "ap": precision.sum(1) / np.minimum(n_rel, k),
    }


def rank_metrics(ranks: np.ndarray, k: int, gains: Optional[np.ndarray] = None) -> Dict[str, float]:
    """``metrics_at_k`` for one query, as plain Python values."""
    m = metrics_at_k([np.asarray(ranks)], k, None if gains is None else [np.asarray(gains, dtype=float)])
    return {"is_hit": bool(m["is_hit"][0]), **{key: float(v[0]) for key, v in m.items() if key != "is_hit"}}


def evaluate(
    dataset: EmbeddingQAFinetuneDataset,
    embed_model: Union[BaseEmbedding, str],
    top_k: int = 5,
    verbose: bool = False,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    graded_relevance: Optional[Dict[str, Dict[str, float]]] = None,
) -> pd.DataFrame:
    """Exact-search retrieval metrics of ``embed_model`` on ``dataset``, one row per query.

    Args:
        dataset: queries, corpus and relevant docs (several per query allowed).
        embed_model: a ``BaseEmbedding`` (adapter models included) or a spec such as ``"default"``.
        top_k: the cut-off for hit-rate, MRR, recall, nDCG and MAP.
        verbose: progress bars while embedding.
        cache: where base embeddings are kept (default: ``$ADAPTERKIT_CACHE_DIR``).
        graded_relevance: optional ``{query_id: {node_id: grade}}`` for nDCG (default grade 1).

    Raises ``NonFiniteEmbeddingError`` when a query vector is NaN or infinite (a diverged adapter),
    rather than scoring it. Ties are ranked pessimistically (``exact_search``): a model that gives
    every document the same score misses every query.

    Returns:
        A DataFrame with ``query_id, query, expected, retrieved, rank, is_hit, mrr, recall, ndcg, ap``.
        ``rank`` is the rank of the first relevant doc over the whole corpus, so hit-rate at any
        k is ``(df["rank"] <= k).mean()`` (see ``hit_rate_curve``).

    Example::

        df = evaluate(val_dataset, "default", top_k=5)
        df[["is_hit", "mrr"]].mean()
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}.")
    dataset.validate()
    model = resolve_embed_model(embed_model)
    qids = list(dataset.queries)
    doc_ids = list(dataset.corpus)
    doc_pos = {d: i for i, d in enumerate(doc_ids)}
    doc_vecs = encode(model, [dataset.corpus[d] for d in doc_ids], "text", cache=cache, show_progress=verbose)
    q_vecs = encode(model, [dataset.queries[q] for q in qids], "query", cache=cache, show_progress=verbose)
    if q_vecs.shape[1] != doc_vecs.shape[1]:
        raise ValueError(
            f"Query vectors have {q_vecs.shape[1]} dimensions but documents {doc_vecs.shape[1]}: "
            "the adapter must map back to the base model's dimension."
        )
    bad = np.where(~np.isfinite(q_vecs).all(axis=1))[0]
    if len(bad):
        raise NonFiniteEmbeddingError(
            f"{len(bad)} of {len(qids)} query vectors from {model.class_name()} are not finite (NaN/inf), e.g. for "
            f"{dataset.queries[qids[bad[0]]][:60]!r}: the adapter's weights are not finite (training diverged; "
            "retrain with a lower learning rate). No score is given for such a model."
        )
    relevant = [[doc_pos[d] for d in dataset.relevant_docs[q]] for q in qids]
    top_idx, _, ranks = exact_search(q_vecs, doc_vecs, top_k, relevant)
    gains = None
    if graded_relevance:
        gains = [
            np.array([graded_relevance[q].get(d, 1.0) for d in dataset.relevant_docs[q]]) if q in graded_relevance else None
            for q in qids
        ]
    metrics = metrics_at_k(ranks, top_k, gains)
    return pd.DataFrame(
        {
            "query_id": qids,
            "query": [dataset.queries[q] for q in qids],
            "expected": [dataset.relevant_docs[q] for q in qids],
            "retrieved": [[doc_ids[j] for j in row] for row in top_idx],
            "rank": [int(r.min()) for r in ranks],
            **metrics,
        }
    )


def hit_rate_curve(results: pd.DataFrame, ks: Sequence[int] = range(1, 11)) -> pd.Series:
    """Hit-rate at each k from an ``evaluate`` DataFrame (uses the full-corpus ``rank`` column)."""
    return pd.Series({k: float((results["rank"] <= k).mean()) for k in ks}, name="hit_rate")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def display_results(names: Sequence[str], results_arr: Sequence[pd.DataFrame], show: bool = True) -> pd.DataFrame:
    """The walkthrough's table ``retrievers | hit_rate | mrr`` (plus recall, ndcg, map), one row per model."""
    if len(names) != len(results_arr):
        raise ValueError(f"{len(names)} names for {len(results_arr)} results: give one name per result.")
    rows = []
    for name, df in zip(names, results_arr):
        rows.append(
            {
                "retrievers": name,
                "hit_rate": df["is_hit"].mean(),
                "mrr": df["mrr"].mean(),
                "recall": df["recall"].mean(),
                "ndcg": df["ndcg"].mean(),
                "map": df["ap"].mean(),
            }
        )
    table = pd.DataFrame(rows)
    if show and not _in_notebook():  # in Jupyter the returned table is the cell's output
        print(table.to_string(index=False))
    return table


def win_loss(base: pd.DataFrame, other: pd.DataFrame) -> Dict[str, int]:
    """Per-query comparison on reciprocal rank: how many queries got better, worse, or stayed."""
    merged = base[["query_id", "mrr"]].merge(other[["query_id", "mrr"]], on="query_id", suffixes=("_base", "_other"))
    diff = merged["mrr_other"] - merged["mrr_base"]
    return {"wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()), "ties": int((diff == 0).sum())}
