"""Vector stores built by the base model, queried through an adapter: no document is embedded again.

An adapter transforms only queries, so an index whose documents were embedded by the base model
stays valid. This module builds such indexes once (a persisted LlamaIndex ``VectorStoreIndex``, and
a Qdrant collection in local mode), reloads them, and queries them through base and adapter models.
``CountingEmbedding`` counts every text the base model is asked to embed, which is how the notebook
shows that querying a reloaded index embeds queries and nothing else.

Example::

    counter = CountingEmbedding("default")
    nodes = embed_nodes_once(corpus_to_nodes(val_dataset), counter)   # counter.counts["text"] == len(nodes)
    build_simple_index(nodes, counter, "storage/simple")
    index = load_simple_index("storage/simple", AdapterEmbeddingModel(counter, "model_output", cache=False))
    index.as_retriever(similarity_top_k=5).retrieve("What are Uber's main risks?")  # counter: queries only
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.metrics import metrics_at_k

__all__ = [
    "CountingEmbedding",
    "build_qdrant_index",
    "build_simple_index",
    "embed_nodes_once",
    "load_qdrant_index",
    "metrics_by_index",
    "open_qdrant",
    "load_simple_index",
    "retrieval_results",
]

PathLike = Union[str, "os.PathLike[str]"]


class CountingEmbedding(BaseEmbedding):
    """A base model that counts the texts it is asked to embed, per kind (``"text"``, ``"query"``).

    Every request is counted, then answered through adapterkit's disk cache (so a warm cache makes
    it fast, and the counts are the same cold or warm). Its cache entries are the base model's own.

    Args:
        base_embed_model: any LlamaIndex ``BaseEmbedding`` or a spec (``"default"``).
        cache: an ``EmbeddingCache``, a folder, None for ``$ADAPTERKIT_CACHE_DIR``, or False to
            call the base model for every request.

    Pass it to ``AdapterEmbeddingModel(counter, path, cache=False)`` so that every query the adapter
    model embeds goes through the counter.
    """

    _inner: BaseEmbedding = PrivateAttr()
    _cache: Any = PrivateAttr()
    _counts: Dict[str, int] = PrivateAttr()

    def __init__(self, base_embed_model: Union[BaseEmbedding, str], cache: Union[EmbeddingCache, PathLike, None, bool] = None, **kwargs: Any) -> None:
        inner = resolve_embed_model(base_embed_model)
        kwargs.setdefault("embed_batch_size", inner.embed_batch_size)
        super().__init__(model_name=inner.model_name, **kwargs)
        self._inner, self._cache = inner, cache
        self._counts = {"text": 0, "query": 0}

    @classmethod
    def class_name(cls) -> str:
        return "CountingEmbedding"

    @property
    def cache_identity(self) -> str:
        """The base model's identity: the counter shares its cache entries."""
        return model_identity(self._inner)

    @property
    def base_embed_model(self) -> BaseEmbedding:
        return self._inner

    @property
    def counts(self) -> Dict[str, int]:
        """Texts embedded since creation or the last ``reset()``: ``{"text": n, "query": m}``."""
        return dict(self._counts)

    def reset(self) -> None:
        self._counts = {"text": 0, "query": 0}

    def _embed(self, texts: List[str], kind: str) -> List[List[float]]:
        self._counts[kind] += len(texts)
        if self._cache is False:
            from adapterkit.cache import call_model

            return [list(map(float, v)) for v in call_model(self._inner, list(texts), kind)]
        return embed_texts(self._inner, texts, kind, cache=self._cache).tolist()

    def _get_query_embeddings(self, queries: List[str]) -> List[List[float]]:
        return self._embed(queries, "query")

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._embed(texts, "text")

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._embed([query], "query")[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._embed([text], "text")[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)


def embed_nodes_once(nodes: Sequence[BaseNode], embed_model: BaseEmbedding, show_progress: bool = True) -> List[BaseNode]:
    """Embed the nodes with the base model (LlamaIndex's ``embed_nodes``) and keep each vector on its node.

    Nodes that carry an embedding are never embedded again by LlamaIndex, so the same nodes can be
    put into any number of vector stores for the price of one embedding pass.
    """
    from llama_index.core.indices.utils import embed_nodes

    vectors = embed_nodes(nodes, embed_model, show_progress=show_progress)
    for node in nodes:
        node.embedding = vectors[node.node_id]
    return list(nodes)


def _fresh(folder: PathLike) -> Path:
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def build_simple_index(nodes: Sequence[BaseNode], embed_model: BaseEmbedding, persist_dir: PathLike) -> Any:
    """A LlamaIndex ``VectorStoreIndex`` (in-memory store) over ``nodes``, persisted to ``persist_dir`` (replaced)."""
    from llama_index.core import VectorStoreIndex

    folder = _fresh(persist_dir)
    index = VectorStoreIndex(list(nodes), embed_model=embed_model)
    index.storage_context.persist(persist_dir=str(folder))
    return index


def load_simple_index(persist_dir: PathLike, embed_model: BaseEmbedding) -> Any:
    """Reload a persisted ``VectorStoreIndex``; queries are embedded by ``embed_model`` (e.g. an adapter model)."""
    from llama_index.core import StorageContext, load_index_from_storage

    storage = StorageContext.from_defaults(persist_dir=str(persist_dir))
    return load_index_from_storage(storage, embed_model=embed_model)


def open_qdrant(path: PathLike) -> Any:
    """A ``QdrantClient`` in local mode (an embedded store in a folder, no server). One per folder and process.

    Trust note: qdrant-client's local mode stores its points with Python's pickle, so opening a folder
    runs whatever its files say. Open only folders you wrote yourself (as the notebooks do); for
    stores from elsewhere use a Qdrant server, whose data the client never unpickles.
    """
    try:
        from qdrant_client import QdrantClient
    except ImportError as exc:
        raise ImportError("Qdrant needs pip install 'adapterkit[notebooks]' (qdrant-client, llama-index-vector-stores-qdrant).") from exc
    return QdrantClient(path=str(path))


def _qdrant_store(client: Any, collection: str) -> Any:
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore
    except ImportError as exc:
        raise ImportError("Qdrant needs pip install 'adapterkit[notebooks]' (llama-index-vector-stores-qdrant).") from exc
    return QdrantVectorStore(collection_name=collection, client=client)


def build_qdrant_index(nodes: Sequence[BaseNode], embed_model: BaseEmbedding, path: PathLike, collection: str = "uber_2021") -> None:
    """Write ``nodes`` into a Qdrant collection in local mode at ``path`` (replaced), then close it.

    Nodes that already carry embeddings (``embed_nodes_once``) are stored as they are.
    """
    from llama_index.core import StorageContext, VectorStoreIndex

    client = open_qdrant(_fresh(path))
    try:
        store = _qdrant_store(client, collection)
        with warnings.catch_warnings():  # the integration asks for payload indexes, which local mode ignores
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            VectorStoreIndex(list(nodes), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model)
    finally:
        client.close()  # local mode locks the folder until the client is closed


def load_qdrant_index(client: Any, embed_model: BaseEmbedding, collection: str = "uber_2021") -> Any:
    """A ``VectorStoreIndex`` over an existing Qdrant collection that embeds queries with ``embed_model``.

    Args:
        client: from ``open_qdrant(path)``; several indexes (base, adapter) can share it. Close it
            when done (``client.close()``).
    """
    from llama_index.core import VectorStoreIndex

    return VectorStoreIndex.from_vector_store(_qdrant_store(client, collection), embed_model=embed_model)


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
