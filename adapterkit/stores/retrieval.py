"""Retrieval scored with the same metrics as ``evaluate``: through an index's own retriever, or by exact
search over every vector of a store (streamed, for stores too large to hold)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from adapterkit.cache import EmbeddingCache, NonFiniteEmbeddingError
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model
from adapterkit.evaluation.evaluate import encode
from adapterkit.metrics import finite_scores, merge_top_k, metrics_at_k
from adapterkit.stores.stored_vectors import read_stored


def retrieval_results(
    index: Any, dataset: EmbeddingQAFinetuneDataset, top_k: int = 5, query_ids: Optional[Sequence[str]] = None
) -> pd.DataFrame:
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
    return pd.DataFrame(
        {"query_id": qids, "retrieved": retrieved, "top_score": top_scores, "is_hit": metrics["is_hit"], "mrr": metrics["mrr"]}
    )


def metrics_by_index(results: Mapping[tuple, pd.DataFrame], digits: int = 4) -> pd.DataFrame:
    """``{(store, model): retrieval_results DataFrame}`` as one table of hit-rate, MRR and the median
    score of the first result (what a ``similarity_cutoff`` is compared with), rounded."""
    rows = []
    for (store, model), df in results.items():
        top = round(float(df["top_score"].median()), 3) if "top_score" in df else float("nan")
        rows.append(
            {
                "store": store,
                "query model": model,
                "hit_rate": round(float(df["is_hit"].mean()), digits),
                "mrr": round(float(df["mrr"].mean()), digits),
                "median_top_score": top,
            }
        )
    return pd.DataFrame(rows)


def evaluate_on_store(
    dataset: EmbeddingQAFinetuneDataset,
    embed_model: Any,
    vector_store: Any,
    top_k: int = 10,
    cache: Union[EmbeddingCache, str, "os.PathLike[str]", None] = None,
    batch_size: int = 10_000,
) -> pd.DataFrame:
    """``evaluate``'s table, each query ranked among every chunk of ``vector_store`` rather than ``dataset.corpus``.

    Exact cosine search over the stored vectors, streamed, with ``evaluate``'s rules: the rank of every
    relevant chunk over the whole store, ties ranked pessimistically, a non-finite score the lowest. So a
    sample of a large store can be trained on and the held-out questions still be ranked among all of it.
    Only the queries are embedded. Example::

        df = evaluate_on_store(held_out, adapter_model, pg_store)   # held_out.corpus may be any part of the store
    """
    return compare_on_store(dataset, {"model": embed_model}, vector_store, top_k, cache, batch_size)["model"]


def compare_on_store(
    dataset: EmbeddingQAFinetuneDataset,
    models: Mapping[str, Any],
    vector_store: Any,
    top_k: int = 10,
    cache: Union[EmbeddingCache, str, "os.PathLike[str]", None] = None,
    batch_size: int = 10_000,
) -> Dict[str, pd.DataFrame]:
    """``evaluate_on_store`` for several models (``{name: model}``) in two reads of the store: one for the
    relevant chunks' vectors, one to rank every model's queries together."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}.")
    qids = list(dataset.queries)
    if not qids:
        raise ValueError("The dataset has no queries to rank.")
    vectors = []
    for model in models.values():
        model = resolve_embed_model(model)
        q = encode(model, [dataset.queries[x] for x in qids], "query", cache=cache)
        if not np.isfinite(q).all():
            raise NonFiniteEmbeddingError(
                f"Query vectors from {model.class_name()} are not finite (NaN/inf): no score is given for such a model."
            )
        vectors.append(q)
    relevant = [list(dataset.relevant_docs[x]) for x in qids] * len(models)
    found, ranks = _ranks_on_store(np.concatenate(vectors), relevant, vector_store, top_k, batch_size)
    frames = {}
    for m, name in enumerate(models):
        part = slice(m * len(qids), (m + 1) * len(qids))
        frames[name] = pd.DataFrame(
            {
                "query_id": qids,
                "query": [dataset.queries[x] for x in qids],
                "expected": relevant[part],
                "retrieved": found[part],
                "rank": [int(r.min()) for r in ranks[part]],
                **metrics_at_k(ranks[part], top_k),
            }
        )
    return frames


def _ranks_on_store(
    queries: np.ndarray, relevant: List[List[str]], vector_store: Any, k: int, batch_size: int
) -> Tuple[List[List[str]], List[np.ndarray]]:
    """The top ``k`` ids per query and the rank of each relevant chunk over the whole store (``exact_search``'s rules)."""
    wanted = {d for docs in relevant for d in docs}
    rel_vectors = {i: v for batch in read_stored(vector_store, batch_size) for i, v in zip(batch.ids, batch.vectors) if i in wanted}
    missing = sorted(wanted - set(rel_vectors))
    if missing:
        raise ValueError(
            f"{len(missing)} relevant chunk(s) are not in the store (e.g. {missing[:3]}): drop those questions, or write the "
            "chunks into the store first."
        )
    q = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)
    width = max(len(r) for r in relevant)
    mask = torch.zeros(len(q), width, dtype=torch.bool)
    rel = torch.zeros(len(q), width, q.shape[1])
    for row, docs in enumerate(relevant):
        mask[row, : len(docs)] = True
        rel[row, : len(docs)] = torch.as_tensor(np.stack([rel_vectors[d] for d in docs]))
    rel_scores = finite_scores((F.normalize(rel, dim=-1) * q[:, None, :]).sum(-1))
    beaten = ((rel_scores[:, None, :] > rel_scores[:, :, None]) & mask[:, None, :]).sum(-1)  # relevant ones, ties not counted
    best_s, best_i = torch.full((len(q), k), -torch.inf), torch.full((len(q), k), -1, dtype=torch.long)
    named: Dict[int, str] = {}
    seen = 0
    for batch in read_stored(vector_store, batch_size):
        s = finite_scores(q @ F.normalize(torch.as_tensor(batch.vectors), dim=1).T)
        position = {d: j for j, d in enumerate(batch.ids) if d in wanted}
        is_rel = torch.zeros_like(s, dtype=torch.bool)
        for row, docs in enumerate(relevant):
            for d in docs:
                if d in position:
                    is_rel[row, position[d]] = True
        beaten += ((s[:, None, :] >= rel_scores[:, :, None]) & ~is_rel[:, None, :]).sum(-1)  # every other chunk at or above counts
        best_s, best_i = merge_top_k(best_s, best_i, s, seen)
        named = {j: named[j] if j < seen else batch.ids[j - seen] for j in set(best_i.flatten().tolist()) if j >= 0}
        seen += len(batch.ids)
    ranks = (beaten + 1).numpy()
    return [[named[j] for j in row if j >= 0] for row in best_i.tolist()], [ranks[row][mask[row].numpy()] for row in range(len(q))]
