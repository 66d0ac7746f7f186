"""LlamaIndex indexes built once with the base model (a persisted simple index, Qdrant) and reopened with any model."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, List, Sequence, Union

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode

PathLike = Union[str, "os.PathLike[str]"]


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
