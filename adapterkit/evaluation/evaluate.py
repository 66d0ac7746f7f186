"""LlamaIndex's ``evaluate`` and ``display_results``: retrieval metrics of a model on a dataset.

``evaluate`` scores every query against the whole corpus (exact cosine search over cached base
embeddings, ``adapterkit.metrics``) and returns one row per query; ``display_results`` is the
walkthrough's table of hit-rate and MRR per model.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.adapter_embedding import AdapterEmbeddingModel
from adapterkit.cache import EmbeddingCache, NonFiniteEmbeddingError, embed_texts
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model
from adapterkit.metrics import exact_search, metrics_at_k, paired_ranks
from adapterkit.query_vectors import apply_adapter


def evaluate(
    dataset: EmbeddingQAFinetuneDataset,
    embed_model: Union[BaseEmbedding, str],
    top_k: int = 5,
    verbose: bool = False,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    graded_relevance: Optional[Dict[str, Dict[str, float]]] = None,
    doc_vectors: Optional[Mapping[str, Sequence[float]]] = None,
) -> pd.DataFrame:
    """Exact-search retrieval metrics of ``embed_model`` on ``dataset``, one row per query.

    Args:
        dataset: queries, corpus and relevant docs (several per query allowed).
        embed_model: a ``BaseEmbedding`` (adapter models included) or a spec such as ``"default"``.
        top_k: the cut-off for hit-rate, MRR, recall, nDCG and MAP.
        verbose: progress bars while embedding.
        cache: where base embeddings are kept (default: ``$ADAPTERKIT_CACHE_DIR``).
        graded_relevance: optional ``{query_id: {node_id: grade}}`` for nDCG (default grade 1).
        doc_vectors: ``{node_id: vector}`` to search instead of embedding the corpus (vectors read
            from a vector store, or edited ones such as NUDGE's); every corpus id must have one.

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
    if doc_vectors is not None:
        missing = [d for d in doc_ids if d not in doc_vectors]
        if missing:
            raise ValueError(f"doc_vectors has no vector for {len(missing)} corpus ids, e.g. {missing[0]!r}.")
        doc_vecs = np.asarray([doc_vectors[d] for d in doc_ids], dtype=np.float32)
    else:
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
            np.array([graded_relevance[q].get(d, 1.0) for d in dataset.relevant_docs[q]]) if q in graded_relevance else None for q in qids
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
    merged = paired_ranks(base, other, "mrr")
    diff = merged["mrr_other"] - merged["mrr_base"]
    return {"wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()), "ties": int((diff == 0).sum())}


def encode(
    model: BaseEmbedding,
    texts: Sequence[str],
    kind: str = "text",
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embeddings for ``texts`` from any model, through the cache wherever a base model is called.

    Adapter models (adapterkit's or LlamaIndex's ``AdapterEmbeddingModel``) are split into their
    base model, whose vectors are cached, and the adapter, applied in batches.
    """
    if isinstance(model, AdapterEmbeddingModel):
        return model.embed(texts, kind, show_progress=show_progress)
    adapter = getattr(model, "_adapter", None)
    base = getattr(model, "_base_embed_model", None)
    if isinstance(adapter, torch.nn.Module) and isinstance(base, BaseEmbedding):  # LlamaIndex's class
        vecs = embed_texts(base, texts, kind, cache=cache, show_progress=show_progress)
        if kind == "query" and getattr(model, "_transform_query", True):
            vecs = apply_adapter(adapter, vecs)
        return vecs
    return embed_texts(
        model, texts, kind, cache=cache, show_progress=show_progress, purpose=f"{'questions' if kind == 'query' else 'chunks'} to score"
    )
