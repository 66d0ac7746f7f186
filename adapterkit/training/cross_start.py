"""The start of a cross-model run: a linear map from the query model's space into the index model's.

``EmbeddingAdapterFinetuneEngine(..., index_model=OLD)`` embeds documents with OLD and queries with
the engine's model (NEW). Before training, ``cross_model.fit_linear_map`` fits the map that sends NEW's
vectors of a paired sample onto OLD's: the run's training queries and pseudo-queries (NEW embeds them
anyway; OLD embeds them as queries, never a document), plus ``map_sample`` chunks of the searched
corpus embedded by NEW too. Training starts at that map, its penalty keeps it near there, and the
held-out guard compares every epoch with it.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.adapters import LinearLayer
from adapterkit.cache import embed_texts
from adapterkit.cross_model import SampleTooSmallError, choose_sample, fit_linear_map


def fit_start_map(
    query_model: BaseEmbedding,
    index_model: BaseEmbedding,
    queries: Sequence[str],
    corpus: Mapping[str, str],
    index_vectors: Mapping[str, np.ndarray],
    map_sample: Union[int, float],
    seed: int,
    cache: Any = None,
    show_progress: bool = False,
) -> Tuple[LinearLayer, Dict[str, Any]]:
    """The start map and what fitted it: ``(LinearLayer(d_query, d_index), {"query_pairs", "sample_chunks", ...})``.

    Args:
        query_model: the model that embeds queries (NEW); of the corpus it embeds the sampled chunks only.
        index_model: the model that built the index (OLD); it embeds ``queries`` as queries.
        queries: the run's query texts (labelled questions, pseudo-queries).
        corpus: the searched corpus ``{chunk id: text}`` the chunk sample is drawn from.
        index_vectors: ``{chunk id: vector}`` from the index model, already computed or read from a store.
        map_sample: chunks in the sample: a count, or a share of ``corpus`` (0: queries only).
    """
    texts = list(dict.fromkeys(queries))
    new = [embed_texts(query_model, texts, "query", cache=cache, show_progress=show_progress)]
    old = [embed_texts(index_model, texts, "query", cache=cache, show_progress=show_progress)]
    ids = choose_sample(list(corpus), map_sample, seed) if map_sample else []
    if ids:
        new.append(embed_texts(query_model, [corpus[d] for d in ids], "text", cache=cache, show_progress=show_progress))
        old.append(np.stack([index_vectors[d] for d in ids]))
    new_rows, old_rows = np.concatenate(new), np.concatenate(old)
    try:
        layer = fit_linear_map(new_rows, old_rows)
    except SampleTooSmallError as exc:
        raise SampleTooSmallError(
            f"{exc} Here: {len(texts)} distinct query texts and {len(ids)} sampled chunks. Raise map_sample "
            f"(up to all {len(corpus)} chunks of the searched corpus), or give more questions or a larger "
            "unlabeled_corpus."
        ) from None
    method = "procrustes" if new_rows.shape[1] == old_rows.shape[1] else "lstsq"
    return layer, {
        "query_pairs": len(texts),
        "sample_chunks": len(ids),
        "corpus_chunks": len(corpus),
        "method": method,
        "query_dim": int(new_rows.shape[1]),
        "index_dim": int(old_rows.shape[1]),
    }
