"""``CountingEmbedding``: a base model that counts what it embeds (to show what an index re-embeds)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Union

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.embeddings import model_identity, resolve_embed_model

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

    def __init__(
        self, base_embed_model: Union[BaseEmbedding, str], cache: Union[EmbeddingCache, PathLike, None, bool] = None, **kwargs: Any
    ) -> None:
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
