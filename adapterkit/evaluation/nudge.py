"""NUDGE (Zeighami et al., 2024, arXiv 2409.02343): edit the stored document vectors, not the queries.

**This changes the index**: every document that answers a training question gets a new vector, which
must be written back into the vector store; queries are embedded by the base model as they are. It is
here as the baseline LlamaIndex publishes for SciFact, beside adapterkit's query-side methods
(adapter and corpus memory), which leave every stored vector as it is.

NUDGE-N, as the paper defines it: with ``g`` the sum of the (unit) training questions a document
answers, the document's unit vector ``v`` turns toward ``g`` as far as ``||v' - v||^2 <= gamma``
allows (``v' = g/|g|`` when that is within reach), staying unit length. ``gamma`` is chosen on a
held-out fifth of the training questions (``val_fraction``), from the grid the paper uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Sequence, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.data.splits import held_out
from adapterkit.embeddings import resolve_embed_model
from adapterkit.metrics import exact_search, metrics_at_k

GAMMAS = tuple(0.02 * i for i in range(25))  # the paper's grid


@dataclass
class NudgeResult:
    """Edited document vectors (every document of the corpus, unit length) and how gamma was chosen."""

    doc_vectors: Dict[str, np.ndarray]
    gamma: float
    val_mrr: Dict[float, float] = field(default_factory=dict)  # held-out MRR@10 per gamma tried
    edited: int = 0  # documents whose vector changed


def nudge_n(docs: np.ndarray, gradient: np.ndarray, gamma: float) -> np.ndarray:
    """Turn each unit row of ``docs`` toward its row of ``gradient`` within ``||v' - v||^2 <= gamma``.

    Rows whose gradient is zero, or points away from the document, are left unchanged (as in the paper).
    """
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    norm = np.linalg.norm(gradient, axis=1, keepdims=True)
    target = np.divide(gradient, norm, out=np.zeros_like(gradient), where=norm > 0)
    along = (docs * target).sum(1, keepdims=True)  # cos(v, g)
    across = target - along * docs  # the part of g orthogonal to v
    across_norm = np.linalg.norm(across, axis=1, keepdims=True)
    reach = 1 - gamma / 2  # ||v' - v||^2 <= gamma  <=>  v.v' >= 1 - gamma/2
    turned = reach * docs + np.sqrt(max(0.0, 1 - reach**2)) * np.divide(
        across, across_norm, out=np.zeros_like(across), where=across_norm > 0
    )
    out = np.where(along >= reach, target, turned)  # g within reach: the document becomes g/|g|
    keep = (norm[:, 0] == 0) | (along[:, 0] < 0) | (across_norm[:, 0] == 0) | (gamma == 0)
    out[keep] = docs[keep]
    return out.astype(np.float32)


def nudge_documents(
    dataset: EmbeddingQAFinetuneDataset,
    embed_model: Union[BaseEmbedding, str],
    val_fraction: float = 0.2,
    gammas: Sequence[float] = GAMMAS,
    seed: int = 0,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    k: int = 10,
) -> NudgeResult:
    """NUDGE-N document vectors for ``dataset``'s corpus from its (training) questions.

    Args:
        dataset: training questions with their relevant documents, over the corpus to edit.
        embed_model: the base model (documents embedded as texts, questions as queries).
        val_fraction: share of the questions held out to choose ``gamma`` (by MRR@k over the corpus).
        gammas: the values tried.

    Returns:
        a ``NudgeResult``; pass ``doc_vectors`` to ``evaluate(..., doc_vectors=...)`` or write them
        into your vector store.
    """
    model = resolve_embed_model(embed_model)
    doc_ids = list(dataset.corpus)
    docs = embed_texts(model, [dataset.corpus[d] for d in doc_ids], "text", cache=cache)
    qids = list(dataset.queries)
    queries = embed_texts(model, [dataset.queries[q] for q in qids], "query", cache=cache)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    row = {d: i for i, d in enumerate(doc_ids)}
    relevant = [[row[d] for d in dataset.relevant_docs[q]] for q in qids]
    train, val = held_out(len(qids), val_fraction, np.random.default_rng(seed))
    n_val = len(val)
    scores: Dict[float, float] = {}
    if n_val:
        gradient = _gradient(queries[train], [relevant[i] for i in train], len(docs))
        for gamma in gammas:
            _, _, ranks = exact_search(queries[val], nudge_n(docs, gradient, gamma), 1, [relevant[i] for i in val])
            scores[float(gamma)] = float(metrics_at_k(ranks, k)["mrr"].mean())
        best = max(scores, key=lambda g: (scores[g], -g))  # ties: the smaller edit
    else:
        best = float(gammas[len(gammas) // 2])
    edited = nudge_n(docs, _gradient(queries[train], [relevant[i] for i in train], len(docs)), best)
    changed = int((np.abs(edited - docs / np.linalg.norm(docs, axis=1, keepdims=True)) > 1e-7).any(1).sum())
    return NudgeResult({d: edited[i] for i, d in enumerate(doc_ids)}, best, scores, changed)


def _gradient(queries: np.ndarray, relevant: Sequence[Sequence[int]], n_docs: int) -> np.ndarray:
    """Per document, the sum of the training questions it answers."""
    gradient = np.zeros((n_docs, queries.shape[1]), dtype=np.float64)
    for q, docs in zip(queries, relevant):
        for d in docs:
            gradient[d] += q
    return gradient
