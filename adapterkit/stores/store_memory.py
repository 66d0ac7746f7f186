"""A sentence memory of every chunk in a vector store, built by streaming: nothing held whole, no chunk re-embedded.

``memory_from_store`` reads the store batch by batch (``read_stored``). Each chunk's stored vector is
its chunk vector as it is; its sentences (6+ words; at most ``max_keys``) are embedded as queries
through the embedding cache and become its keys. Each batch goes to a writer:

- ``PgMemoryWriter``: a table in PostgreSQL with an ANN index (``PgMemory``), for millions of chunks;
- ``QdrantMemoryWriter``: a collection in Qdrant (``QdrantMemory``), beside a Qdrant index;
- ``MemoryWriter``: local ``.npy`` files (``CorpusMemory.load``), for what fits one machine.

A crash loses the batch in flight only: the keys embedded so far are in the cache (a re-run embeds
none of them again), and ``PgMemoryWriter(..., resume=True)`` skips the chunks already written. To
spread the sentence embedding over a cluster, embed the sentences with ``embed_on_cluster`` into the
same cache first; this function then finds every key cached.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.documents import chunk_sentences
from adapterkit.embeddings import model_identity
from adapterkit.memory.corpus_memory import _text_hash
from adapterkit.memory.rows import check_max_keys
from adapterkit.stores.stored_vectors import check_batch, read_stored, stored_dim


def memory_from_store(
    vector_store: Any,
    embed_model: BaseEmbedding,
    writer: Any,
    max_keys: Optional[int] = None,
    batch_size: int = 2_000,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    show_progress: bool = False,
) -> Dict[str, int]:
    """Write a memory of every chunk of ``vector_store`` through ``writer``; returns ``{"chunks": .., "keys": ..}``.

    Args:
        vector_store: a LlamaIndex ``PGVectorStore`` or ``QdrantVectorStore`` built by ``embed_model``.
        embed_model: the base model: it made the stored vectors, and it embeds the sentences (as queries).
        writer: a ``PgMemoryWriter``, ``QdrantMemoryWriter`` or ``MemoryWriter`` of the store's dimension; finish or close it
            afterwards (its ``with`` block does). Models it records must be ``embed_model``.
        max_keys: sentences per chunk at most (``chunk_sentences(text, most=max_keys)``); None: all.
            Must agree with the writer's own ``max_keys`` where it has one.
        batch_size: chunks per read and per write.
        cache: the embedding cache the keys go through.
        show_progress: a tqdm bar over the chunks.

    Example::

        with PgMemoryWriter(pg_store.connection_string, "uber_sentences", 384, index="ivfflat", max_keys=4,
                            key_model=model_identity(base), chunk_model=model_identity(base)) as writer:
            memory_from_store(pg_store, base, writer, max_keys=4)
        model = AdapterEmbeddingModel(base, "model_output", memory=PgMemory(pg_store.connection_string, "uber_sentences"))
    """
    check_max_keys(max_keys)
    recorded = getattr(writer, "options", {})
    if recorded.get("max_keys", max_keys) != max_keys:
        raise ValueError(
            f"The writer holds at most max_keys={recorded['max_keys']} keys per chunk, not {max_keys}: pass the same cap to both."
        )
    ident = model_identity(embed_model)
    for role in ("key_model", "chunk_model"):
        if recorded.get(role) not in (None, ident):
            raise ValueError(
                f"The writer records {role}={recorded[role]!r}, but the keys and chunks come from {ident!r}: "
                "open the writer with this model's identity (model_identity(embed_model))."
            )
    counts = {"chunks": 0, "keys": 0}
    dim: Optional[int] = None
    bar = tqdm(desc="Building the memory", unit="chunk", disable=not show_progress)
    for batch in read_stored(vector_store, batch_size):
        if dim is None:
            dim = stored_dim(batch)  # the chunk vectors go into the memory as stored, never into the cache
            if dim != writer.dim:
                raise ValueError(
                    f"The store holds {dim}-dimensional vectors but the writer was opened for {writer.dim}: open it with dim={dim}."
                )
        check_batch(batch, dim)
        sentences = [chunk_sentences(text, most=max_keys) for text in batch.texts]  # a chunk without one is held with no key
        flat = [s for found in sentences for s in found]
        keys = embed_texts(embed_model, flat, "query", cache=cache) if flat else np.zeros((0, writer.key_dim), np.float32)
        key_chunk = np.repeat(np.arange(len(batch.ids)), [len(found) for found in sentences])
        writer.add(batch.ids, batch.vectors, keys, key_chunk, [_text_hash(t) for t in batch.texts])
        counts["chunks"] += len(batch.ids)
        counts["keys"] += len(flat)
        bar.update(len(batch.ids))
    bar.close()
    if dim is None:
        raise ValueError("The vector store holds no nodes: write the corpus into it first.")
    return counts
