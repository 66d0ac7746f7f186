"""``AdapterEmbeddingModel``: a base model plus a query adapter, as one LlamaIndex ``BaseEmbedding``.

Documents pass through unchanged (so an index built with the base model stays valid); queries are
embedded by the base model and then transformed by the adapter, in batches."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Type, Union, cast

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.callbacks import CallbackManager

from adapterkit.adapters import AdapterLoadError, BaseAdapter, infer_device, load_adapter
from adapterkit.atomic import write_text
from adapterkit.cache import EmbeddingCache, call_model, embed_texts
from adapterkit.cross_model import CROSS_MODEL_FILE, CrossModelError, check_query_model, read_identity
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.memory.corpus_memory import (
    MEMORY_DIR,
    CorpusMemory,
    load_memories,
    memory_folders,
)
from adapterkit.query_vectors import adapt_queries
from adapterkit.records import read_record

BASE_MODEL_FILE = "base_model.json"  # in a model folder: the base model the adapter was trained over
_BASE_FIELDS = {"model_identity": str, "model_name": str, "dim": int}


def _model_name(model: BaseEmbedding) -> str:
    """A readable name: the class and ``model_name``."""
    return f"{model.class_name()} {getattr(model, 'model_name', '')}".strip()


def write_base_model(folder: Union[str, os.PathLike], model: BaseEmbedding, dim: int) -> None:
    """Record in ``folder`` the base model its adapter was trained over (``AdapterEmbeddingModel`` checks it).

    Args:
        folder: the model folder.
        model: the base model (its queries are the adapter's input).
        dim: that model's embedding dimension.
    """
    record = {"model_identity": model_identity(model), "model_name": _model_name(model), "dim": int(dim)}
    write_text(Path(folder) / BASE_MODEL_FILE, json.dumps(record, indent=2))


def read_base_model(folder: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """``base_model.json`` of a model folder, checked field by field, or None without one (LlamaIndex's or older folders)."""
    return read_record(
        Path(folder) / BASE_MODEL_FILE, _BASE_FIELDS, AdapterLoadError, "Restore it, or delete it to serve the folder unchecked."
    )


def check_base_models(
    base: BaseEmbedding,
    folder: Union[str, os.PathLike],
    record: Optional[Dict[str, Any]],
    memories: Sequence[Any],
    index_identity: Optional[str] = None,
) -> None:
    """Refuse a base model other than the one the folder (``record``) and its memories were made with.

    Args:
        base: the base model being served.
        folder: the model folder, named in errors.
        record: its ``base_model.json`` (None: unchecked).
        memories: memories whose ``key_model`` / ``chunk_model`` identities, where recorded, must match.
        index_identity: the identity of the model that built the index, when it is not ``base`` (cross-model).
    """
    ident, override = model_identity(base), "pass check_base_model=False to serve it anyway"
    served = f"{_model_name(base)} ({ident})"
    if record is not None and record["model_identity"] != ident:
        raise AdapterLoadError(
            f"{folder} was trained over {record['model_name']} ({record['model_identity']}), but it is served over {served}: "
            f"the adapter means nothing over another model's vectors. Serve it over the model it was trained with, or {override}."
        )
    roles = (
        ("key_model", "keys", ident, f"queries come from {served}"),
        ("chunk_model", "chunk vectors", index_identity or ident, f"the index is {index_identity or served}"),
    )
    for memory in memories:
        for role, what, expected, actual in roles:
            recorded = getattr(memory, role, None)
            if recorded is not None and recorded != expected:
                raise AdapterLoadError(
                    f"A memory served with {folder} holds {what} of {recorded}, but {actual}: "
                    f"rebuild the memory with that model, or {override}."
                )


class AdapterEmbeddingModel(BaseEmbedding):
    """A frozen base embedding model with a trained query adapter on top.

    Args:
        base_embed_model: any LlamaIndex ``BaseEmbedding``, or a spec for ``resolve_embed_model``.
        adapter_path: folder written by ``BaseAdapter.save`` (or LlamaIndex's engine).
        adapter_cls: the adapter's class, needed for a custom adapter (a ``BaseAdapter`` subclass);
            default: adapterkit's class named in ``config.json``. Nothing the folder names is imported.
        transform_query: apply the adapter to queries (False gives the base model back).
        device: torch device for the adapter; default: CUDA when present, else CPU.
        embed_batch_size: texts per base-model call.
        cache: base embeddings go through adapterkit's disk cache (an ``EmbeddingCache``, a folder,
            None for the default folder, or False to call the base model directly).
        memory: ``CorpusMemory``, ``PgMemory`` or ``QdrantMemory`` objects (one or a list) composed with the adapter at query time, or a
            folder of them; None: those saved beside the adapter (``<adapter_path>/memory``), if any;
            False: none.
        normalize: return unit-length query vectors, as the base model's are, so that dot-product
            stores score like cosine ones. Rankings do not change either way; the cosine scores of
            an adapted query differ from the base model's, so a ``similarity_cutoff`` tuned on base
            scores must be tuned again (notebook 05 measures both).
        index_model: for a cross-model folder (``cross_model.json``: queries of ``base_embed_model``
            mapped into an index another model built), that other model; documents are embedded by
            it. Without it such a model embeds queries only. The folder refuses a base model other
            than the one it was trained over.
        check_base_model: refuse a base model other than the one the folder records (``base_model.json``,
            written by adapterkit's engine) and its memories record (their ``key_model`` / ``chunk_model``),
            with an ``AdapterLoadError``; False serves anyway. Folders without the record are served unchecked.

    Example::

        model = AdapterEmbeddingModel(resolve_embed_model("default"), "model_output")
        index = VectorStoreIndex(nodes, embed_model=model)  # documents: base embeddings
    """

    _base_embed_model: BaseEmbedding = PrivateAttr()
    _adapter: BaseAdapter = PrivateAttr()
    _transform_query: bool = PrivateAttr()
    _target_device: Any = PrivateAttr()
    _cache: Any = PrivateAttr()
    _memories: List[CorpusMemory] = PrivateAttr()
    _normalize: bool = PrivateAttr()
    _cross: Any = PrivateAttr()  # cross_model.json's record, or None
    _index_model: Any = PrivateAttr()
    _folder: str = PrivateAttr()

    def __init__(
        self,
        base_embed_model: Union[BaseEmbedding, str],
        adapter_path: Union[str, os.PathLike],
        adapter_cls: Optional[Type[BaseAdapter]] = None,
        transform_query: bool = True,
        device: Optional[str] = None,
        embed_batch_size: int = 10,
        callback_manager: Optional[CallbackManager] = None,
        cache: Union[EmbeddingCache, str, os.PathLike, None, bool] = None,
        memory: Union[CorpusMemory, Sequence[CorpusMemory], str, os.PathLike, None, bool] = None,
        normalize: bool = True,
        index_model: Union[BaseEmbedding, str, None] = None,
        check_base_model: bool = True,
    ) -> None:
        base = resolve_embed_model(base_embed_model)
        cross = read_identity(adapter_path)
        if cross is not None:
            check_query_model(cross, base, adapter_path)
        elif index_model is not None:
            raise CrossModelError(
                f"{adapter_path} maps queries into its own base model's index (it has no {CROSS_MODEL_FILE}): "
                "drop index_model, or train with EmbeddingAdapterFinetuneEngine(..., index_model=...)."
            )
        record = read_base_model(adapter_path) if check_base_model and cross is None else None
        if record is not None:  # before reading weights and memories; a cross-model folder is checked above, by cross_model.json
            check_base_models(base, adapter_path, record, [])
        super().__init__(
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,  # type: ignore[arg-type]  # typed CallbackManager, but BaseEmbedding turns None into one
            model_name=f"Adapter for {base.model_name}",
        )
        self._base_embed_model = base
        self._target_device = infer_device(device)
        self._adapter = load_adapter(adapter_path, adapter_cls).to(self._target_device).eval()
        takes = self._adapter.get_config_dict().get("in_features") if hasattr(self._adapter, "get_config_dict") else None
        if record is not None and isinstance(takes, int) and takes != record["dim"]:
            raise AdapterLoadError(
                f"{Path(adapter_path) / BASE_MODEL_FILE} says its base model makes {record['dim']}-dimensional vectors, "
                f"but the adapter takes {takes}: the file is damaged; restore it, or delete it to serve the folder unchecked."
            )
        self._transform_query = transform_query
        self._cache = cache
        self._normalize = normalize
        self._cross = cross
        self._index_model = resolve_embed_model(index_model) if index_model is not None else None
        if cross is not None and self._index_model is not None and model_identity(self._index_model) != cross["index_model"]:
            raise CrossModelError(
                f"{adapter_path} maps queries into the index of {cross['index_model_name']} ({cross['index_model']}), "
                f"but index_model is {model_identity(self._index_model)}: pass the model that built the index."
            )
        if memory is None:
            memory = Path(adapter_path) / MEMORY_DIR if memory_folders(Path(adapter_path) / MEMORY_DIR) else False
        if isinstance(memory, (str, os.PathLike)):
            memory = load_memories(memory)
        # one memory (anything with pull: a CorpusMemory, PgMemory or QdrantMemory), or a list
        self._memories = [cast(CorpusMemory, memory)] if hasattr(memory, "pull") else list(cast(Sequence[CorpusMemory], memory or []))
        self._folder = str(adapter_path)
        if check_base_model:  # the memories' keys and chunk vectors, where they record their models
            check_base_models(base, adapter_path, None, self._memories, cross["index_model"] if cross is not None else None)

    @classmethod
    def class_name(cls) -> str:
        return "AdapterEmbeddingModel"

    @property
    def base_embed_model(self) -> BaseEmbedding:
        return self._base_embed_model

    @property
    def adapter(self) -> BaseAdapter:
        return self._adapter

    @property
    def cross_model(self) -> Optional[Dict[str, Any]]:
        """The folder's ``cross_model.json`` (which models embed queries and built the index), or None."""
        return dict(self._cross) if self._cross is not None else None

    @property
    def index_dim(self) -> Optional[int]:
        """The dimension of the index this model's queries are for, when a cross-model folder says so."""
        return self._cross["index_dim"] if self._cross is not None else None

    @property
    def memories(self) -> List[CorpusMemory]:
        """The corpus memories composed with the adapter (empty: the adapter alone)."""
        return list(self._memories)

    def embed(self, texts: Sequence[str], kind: str = "text", show_progress: bool = False) -> np.ndarray:
        """Embed many texts at once: base embeddings (cached), then the adapter on queries.

        Documents of a cross-model folder are embedded by its ``index_model``, never the base model."""
        model = self._base_embed_model
        if self._cross is not None and (kind == "text" or not self._transform_query):
            if self._index_model is None:
                raise CrossModelError(
                    f"This adapter's documents live in {self._cross['index_model_name']}'s space: pass "
                    "index_model=<that model> to embed documents (or queries without the adapter)."
                )
            model = self._index_model
        if self._cache is False:
            base = np.asarray(call_model(model, list(texts), kind), dtype=np.float32)
        else:
            base = embed_texts(model, texts, kind, cache=self._cache, show_progress=show_progress)
        if kind == "query" and self._transform_query and len(base):
            return adapt_queries(self._adapter, base, self._memories, self._normalize, out_dim=self.index_dim, source=self._folder)
        return base

    def _get_query_embeddings(self, queries: List[str]) -> List[List[float]]:
        return self.embed(queries, "query").tolist()

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self.embed(texts, "text").tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embeddings([query])[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)


# LlamaIndex's old name, kept for the walkthrough's imports.
LinearAdapterEmbeddingModel = AdapterEmbeddingModel
