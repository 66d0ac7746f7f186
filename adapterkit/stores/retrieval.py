"""Retrieval scored with the same metrics as ``evaluate``: through an index's own retriever, or by exact
search over every vector of a store (streamed, for stores too large to hold)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from adapterkit.cache import EmbeddingCache, NonFiniteEmbeddingError
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model
from adapterkit.evaluation.evaluate import encode
from adapterkit.metrics import metrics_at_k
from adapterkit.stores.stored_vectors import exact_top_k, read_stored


def retrieval_results(index: Any, dataset: EmbeddingQAFinetuneDataset, top_k: int = 5, query_ids: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Hit, reciprocal rank and the store's score of the first result, per query through ``index.as_retriever``.

    A relevant chunk the retriever did not return counts as ranked below the top ``top_k``.
    """
    retriever = index.as_retriever(similarity_top_k=top_k)
    qids = list(query_ids) if query_ids is not None else list(dataset.queries)
    retrieved, ranks, top_scores = [], [], []
    for qid in qids:
        hits = retriever.retrieve(dataset.queries[qid])
        found = [n.node.node_id for n in hits]
        retrieved.append(found)
        top_scores.append(float(hits[0].score) if hits and hits[0].score is not None else float("nan"))
        ranks.append(np.array([found.index(d) + 1 if d in found else top_k + 1 for d in dataset.relevant_docs[qid]]))
    metrics = metrics_at_k(ranks, top_k)
    return pd.DataFrame({"query_id": qids, "retrieved": retrieved, "top_score": top_scores, "is_hit": metrics["is_hit"], "mrr": metrics["mrr"]})


def metrics_by_index(results: Mapping[tuple, pd.DataFrame], digits: int = 4) -> pd.DataFrame:
    """``{(store, model): retrieval_results DataFrame}`` as one table of hit-rate, MRR and the median
    score of the first result (what a ``similarity_cutoff`` is compared with), rounded."""
    rows = []
    for (store, model), df in results.items():
        top = round(float(df["top_score"].median()), 3) if "top_score" in df else float("nan")
        rows.append({"store": store, "query model": model, "hit_rate": round(float(df["is_hit"].mean()), digits),
                     "mrr": round(float(df["mrr"].mean()), digits), "median_top_score": top})
    return pd.DataFrame(rows)


def evaluate_on_store(dataset: EmbeddingQAFinetuneDataset, embed_model: Any, vector_store: Any, top_k: int = 10,
                      cache: Union[EmbeddingCache, str, "os.PathLike[str]", None] = None, batch_size: int = 10_000) -> pd.DataFrame:
    """``evaluate``'s table, each query ranked among every chunk of ``vector_store`` rather than ``dataset.corpus``.

    Exact cosine search over the stored vectors, streamed (``exact_top_k``: one batch and the running
    top ``top_k`` in memory), so a sample of a large store can be trained on and the held-out questions
    still be ranked among all of it. A relevant chunk outside the top ``top_k`` gets rank ``top_k + 1``:
    the metrics at ``top_k`` (and below) are exact. Only the queries are embedded.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}.")
    model = resolve_embed_model(embed_model)
    qids = list(dataset.queries)
    if not qids:
        raise ValueError("The dataset has no queries to rank.")
    queries = encode(model, [dataset.queries[q] for q in qids], "query", cache=cache)
    if not np.isfinite(queries).all():
        raise NonFiniteEmbeddingError(f"Query vectors from {model.class_name()} are not finite (NaN/inf): no score is given for such a model.")
    found, _ = exact_top_k(queries, read_stored(vector_store, batch_size), top_k)
    ranks = [np.array([row.index(d) + 1 if d in row else top_k + 1 for d in dataset.relevant_docs[q]]) for q, row in zip(qids, found)]
    return pd.DataFrame({"query_id": qids, "query": [dataset.queries[q] for q in qids], "expected": [dataset.relevant_docs[q] for q in qids],
                         "retrieved": found, "rank": [int(r.min()) for r in ranks], **metrics_at_k(ranks, top_k)})
