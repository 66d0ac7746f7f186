"""``index_documents`` (the ``adapterkit index`` command): a folder's chunks, with base vectors, into a vector store.

The chunks get the ids ``adapterkit fit`` gives the same folder and the base model's vectors (through
the embedding cache, so a folder already fitted embeds nothing), so a model folder fitted on the folder
serves straight from the store: ``VectorStoreIndex.from_vector_store(store, embed_model=AdapterEmbeddingModel(...))``.
A re-run replaces every chunk an earlier run wrote from the same folder.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Union

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.folders import read_folder
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.pipeline.sources import check_chunking, close_store, open_store, redact

PathLike = Union[str, "os.PathLike[str]"]
BATCH = 256  # nodes written per call to the store


def reach_server(connection_string: str, store: str) -> None:
    """Connect once to a PostgreSQL server, so that a wrong address or password is reported before any work."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(connection_string)
    try:
        engine.connect().close()
    except Exception as exc:
        raise ConnectionError(
            f"Could not connect to {redact(store)}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}. "
            "Check the URI, the credentials and that the server is running."
        ) from None
    finally:
        engine.dispose()


def index_documents(
    docs: PathLike,
    store: str,
    embed_model: Any = "default",
    cache: Union[EmbeddingCache, PathLike, None] = None,
    chunk_size: int = 1024,
    chunk_overlap: int = 200,
    follow_symlinks: bool = False,
    show_progress: bool = True,
) -> Dict[str, Any]:
    """Write every chunk of ``docs`` with its base vector into the store at URI ``store``; returns counts.

    Each chunk carries ``indexed_from`` (the folder's absolute path) and ``base_model`` (the model's
    identity) in its metadata; a re-run first deletes every chunk indexed from the same folder, so
    edited, removed and re-chunked files leave nothing stale behind.

    Args:
        docs: the documents folder (read as ``adapterkit fit`` reads it, with the same chunk settings).
        store: ``qdrant:///path?collection=NAME`` (a local Qdrant folder, made if missing) or
            ``postgresql://user@host/db?table=NAME&embed_dim=384`` (LlamaIndex's ``PGVectorStore``).
        embed_model: the base model, the one the model folder is fitted over.

    Example::

        index_documents("my_docs", "qdrant:///data/qdrant?collection=my_docs")
    """
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    check_chunking(chunk_size, chunk_overlap)
    model = resolve_embed_model(embed_model)
    origin = os.path.abspath(docs)
    found = read_folder(
        docs, chunk_size=chunk_size, chunk_overlap=chunk_overlap, show_progress=show_progress, follow_symlinks=follow_symlinks
    )
    opened = open_store(store, create=True)  # a bad URI or an unreachable server stops here, before any embedding
    try:
        if getattr(opened, "connection_string", None):  # PostgreSQL: the store object connects lazily
            reach_server(opened.connection_string, store)
        vectors = embed_texts(model, list(found.corpus.values()), "text", cache=cache, show_progress=show_progress)
        dim = getattr(opened, "embed_dim", None)
        if dim is not None and dim != vectors.shape[1]:
            raise ValueError(
                f"{redact(store)} holds {dim}-dimensional vectors and the base model gives {vectors.shape[1]}: "
                f"add &embed_dim={vectors.shape[1]} to the URI (a new table), or use the table's own model."
            )
        nodes = []
        for node, vector in zip(found.nodes, vectors):
            copy = node.model_copy(deep=True)
            copy.embedding = [float(v) for v in vector]
            copy.metadata.update(indexed_from=origin, base_model=model_identity(model))
            for keys in (copy.excluded_embed_metadata_keys, copy.excluded_llm_metadata_keys):
                keys.extend(k for k in ("indexed_from", "base_model") if k not in keys)
            nodes.append(copy)
        try:
            if type(opened).__name__ != "QdrantVectorStore" or opened.client.collection_exists(opened.collection_name):
                # what an earlier run wrote from this folder goes first: nothing stale or doubled stays
                opened.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="indexed_from", value=origin)]))
            for start in range(0, len(nodes), BATCH):
                opened.add(nodes[start : start + BATCH])
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # the server went away, refused the credentials, or refused the data
            raise ConnectionError(
                f"Could not write the chunks into {redact(store)}: {type(exc).__name__}: {str(exc).strip()[:300]}. "
                "Check the URI, the credentials and that the server is running; a re-run replaces what was written."
            ) from None
    finally:
        close_store(opened)
    return {"chunks": len(nodes), "files": len(found.files), "skipped": found.skipped, "store": redact(store)}
