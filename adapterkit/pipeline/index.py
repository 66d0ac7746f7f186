"""``index_documents`` (the ``adapterkit index`` command): a folder's chunks, with base vectors, into a vector store.

The chunks get the ids ``adapterkit fit`` gives the same folder and the base model's vectors (through
the embedding cache, so a folder already fitted embeds nothing), so a model folder fitted on the folder
serves straight from the store: ``VectorStoreIndex.from_vector_store(store, embed_model=AdapterEmbeddingModel(...))``.
A re-run replaces the folder's chunks that are already stored (same ids) and adds the new ones.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Union

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.folders import read_folder
from adapterkit.embeddings import resolve_embed_model
from adapterkit.pipeline.sources import check_chunking, close_store, open_store, redact

PathLike = Union[str, "os.PathLike[str]"]
BATCH = 256  # nodes written per call to the store


def index_documents(docs: PathLike, store: str, embed_model: Any = "default", cache: Union[EmbeddingCache, PathLike, None] = None,
                    chunk_size: int = 1024, chunk_overlap: int = 200, follow_symlinks: bool = False,
                    show_progress: bool = True) -> Dict[str, Any]:
    """Write every chunk of ``docs`` with its base vector into the store at URI ``store``; returns counts.

    Args:
        docs: the documents folder (read as ``adapterkit fit`` reads it, with the same chunk settings).
        store: ``qdrant:///path?collection=NAME`` (a local Qdrant folder, made if missing) or
            ``postgresql://user@host/db?table=NAME&embed_dim=384`` (LlamaIndex's ``PGVectorStore``).
        embed_model: the base model, the one the model folder is fitted over.

    Example::

        index_documents("my_docs", "qdrant:///data/qdrant?collection=my_docs")
    """
    check_chunking(chunk_size, chunk_overlap)
    model = resolve_embed_model(embed_model)
    found = read_folder(docs, chunk_size=chunk_size, chunk_overlap=chunk_overlap, show_progress=show_progress, follow_symlinks=follow_symlinks)
    texts = list(found.corpus.values())
    vectors = embed_texts(model, texts, "text", cache=cache, show_progress=show_progress)
    opened = open_store(store, create=True)
    try:
        dim = getattr(opened, "embed_dim", None)
        if dim is not None and dim != vectors.shape[1]:
            raise ValueError(f"{redact(store)} holds {dim}-dimensional vectors and the base model gives {vectors.shape[1]}: "
                             f"add &embed_dim={vectors.shape[1]} to the URI (a new table), or use the table's own model.")
        nodes = []
        for node, vector in zip(found.nodes, vectors):
            copy = node.model_copy()
            copy.embedding = [float(v) for v in vector]
            nodes.append(copy)
        ids = [n.node_id for n in nodes]
        if type(opened).__name__ != "QdrantVectorStore" or opened.client.collection_exists(opened.collection_name):
            opened.delete_nodes(node_ids=ids)  # a re-run replaces what an earlier run wrote, never doubles it
        for start in range(0, len(nodes), BATCH):
            opened.add(nodes[start:start + BATCH])
    finally:
        close_store(opened)
    return {"chunks": len(nodes), "files": len(found.files), "skipped": found.skipped, "store": redact(store)}
