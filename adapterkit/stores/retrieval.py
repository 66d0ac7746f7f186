"""Retrieval through an index's own retriever, scored with the same metrics as ``evaluate``."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.metrics import metrics_at_k


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
