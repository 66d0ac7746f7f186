"""Documents already in a vector store: read their ids, texts and vectors in batches; never embed them again.

A user whose chunks sit in PostgreSQL/pgvector or Qdrant trains and evaluates from the stored vectors:

- ``read_stored`` streams ``(ids, texts, vectors)`` batches from a LlamaIndex ``PGVectorStore`` (a
  server-side cursor) or ``QdrantVectorStore`` (``scroll``), so the corpus is never read at once;
- ``cache_stored_vectors`` writes them into the embedding cache under the base model's identity:
  the engine, ``evaluate`` and the memories then find every stored document embedded already, and
  call the base model for queries (and texts the store lacks) only;
- ``exact_top_k`` searches the streamed vectors exactly, holding one batch and the running top k;
  ``store_top_k`` asks the store's own (approximate) search; ``recall_at_k`` compares the two.

The stored vector of a node is taken as the base model's vector of its text (``MetadataMode.NONE``),
as LlamaIndex embeds nodes without metadata. ``verify`` re-embeds a few texts to check that the
store was built by this model.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.types import VectorStoreQuery
from tqdm.auto import tqdm

from adapterkit.cache import EmbeddingCache, call_model, get_cache
from adapterkit.cross_model import check_index_dim
from adapterkit.embeddings import model_identity
from adapterkit.metrics import merge_top_k, unit_rows

SUPPORTED = ("PGVectorStore", "QdrantVectorStore")


@dataclass
class StoredBatch:
    """Rows of a vector store: node ids, their texts and their vectors ``(n, dim)`` float32."""

    ids: List[str]
    texts: List[str]
    vectors: np.ndarray


def read_stored(vector_store: Any, batch_size: int = 10_000) -> Iterator[StoredBatch]:
    """Every node of ``vector_store`` with its stored vector, ``batch_size`` rows at a time, in a stable order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    kind = type(vector_store).__name__
    if kind == "PGVectorStore":
        yield from _read_pgvector(vector_store, batch_size)
    elif kind == "QdrantVectorStore":
        yield from _read_qdrant(vector_store, batch_size)
    else:
        raise TypeError(f"Reading stored vectors supports {SUPPORTED}, not {kind}. For another store, read its "
                        "(id, text, vector) rows yourself and pass StoredBatch objects to cache_stored_vectors(batches=...).")


def _read_pgvector(store: Any, batch_size: int) -> Iterator[StoredBatch]:
    """Stream the table with ``COPY ... TO STDOUT (FORMAT binary)``: vectors arrive as float4, nothing is parsed from text."""
    import sqlalchemy

    table = f'"{store.schema_name}"."data_{store.table_name}"'
    engine = sqlalchemy.create_engine(store.connection_string)
    pooled = engine.raw_connection()
    read_fd, write_fd = os.pipe()
    failed: List[BaseException] = []

    def produce() -> None:  # the driver pushes the whole COPY into the pipe; the reader below takes it batch by batch
        try:
            with os.fdopen(write_fd, "wb") as sink, pooled.driver_connection.cursor() as cur:
                cur.copy_expert(f"COPY (SELECT node_id, text, embedding::vector FROM {table} ORDER BY id) TO STDOUT WITH (FORMAT binary)", sink)
        except BaseException as exc:  # a missing table, a lost connection, or the reader went away
            failed.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    cut: Optional[EOFError] = None
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
            try:
                yield from _copy_batches(source, batch_size)
            except EOFError as exc:  # the stream broke mid-row: the producer's error (below) says why
                cut = exc
    finally:
        thread.join(timeout=60)
        pooled.close()
        engine.dispose()
    why = failed[0] if failed and not isinstance(failed[0], BrokenPipeError) else cut
    if why is not None:  # one statement is one snapshot: a read that did not end is never passed off as the table
        raise RuntimeError(f"Reading {table} failed ({type(why).__name__}: {str(why).strip()}); the batches given before "
                           "it are valid, the rest were not read. Read again once the server is back.") from why


def _copy_batches(source: Any, batch_size: int) -> Iterator[StoredBatch]:
    """Rows of PostgreSQL's binary COPY format: (node_id, text, vector) per tuple."""
    def exact(n: int) -> bytes:
        data = source.read(n)
        if len(data) != n:
            raise EOFError("the COPY stream ended early")
        return data

    header = source.read(19)
    if len(header) < 19:  # the server sent nothing: the COPY failed before it started
        return
    exact(struct.unpack("!i", header[15:19])[0])  # header extension
    ids: List[str] = []
    texts: List[str] = []
    vectors: List[bytes] = []
    while True:
        (fields,) = struct.unpack("!h", exact(2))
        if fields == -1:
            break
        (n,) = struct.unpack("!i", exact(4))
        ids.append(exact(n).decode() if n >= 0 else "")
        (n,) = struct.unpack("!i", exact(4))
        texts.append(exact(n).decode() if n >= 0 else "")
        (n,) = struct.unpack("!i", exact(4))
        vectors.append(exact(n)[4:])  # int16 dim, int16 unused, then float4 big-endian
        if len(ids) == batch_size:
            yield StoredBatch(ids, texts, _vectors(vectors))
            ids, texts, vectors = [], [], []
    if ids:
        yield StoredBatch(ids, texts, _vectors(vectors))


def _vectors(raw: List[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(raw), dtype=">f4").astype(np.float32).reshape(len(raw), -1)


def _read_qdrant(store: Any, batch_size: int) -> Iterator[StoredBatch]:
    from llama_index.core.vector_stores.utils import metadata_dict_to_node

    offset = None
    while True:
        points, offset = store.client.scroll(collection_name=store.collection_name, limit=batch_size, offset=offset,
                                             with_payload=True, with_vectors=True)
        if points:
            nodes = [metadata_dict_to_node(p.payload) for p in points]
            vectors = [p.vector if not isinstance(p.vector, dict) else next(iter(p.vector.values())) for p in points]
            yield StoredBatch([n.node_id for n in nodes], [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
                              np.asarray(vectors, dtype=np.float32))
        if offset is None:
            return


def cache_stored_vectors(
    vector_store: Any,
    embed_model: BaseEmbedding,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    batch_size: int = 10_000,
    verify: int = 0,
    batches: Optional[Iterator[StoredBatch]] = None,
    show_progress: bool = False,
) -> Dict[str, str]:
    """Put the store's vectors into the embedding cache as ``embed_model``'s vectors of the stored texts.

    Args:
        vector_store: a LlamaIndex ``PGVectorStore`` or ``QdrantVectorStore`` built with ``embed_model``.
        embed_model: the base model that made the stored vectors (its cache identity is used).
        cache: the embedding cache (an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``).
        batch_size: rows read per round trip.
        verify: embed this many stored texts with ``embed_model`` first and require cosine >= 0.99 with
            the stored vectors (0: trust the store; no document is embedded).
        batches: ``StoredBatch`` objects to use instead of reading ``vector_store`` (any other store).
        show_progress: a tqdm bar over the rows.

    Returns:
        ``{node_id: text}`` of every stored node, in the store's order: the corpus to pass to the engine
        or ``evaluate``, which then embed none of it.

    Example::

        corpus = cache_stored_vectors(pg_store, base_model)
        train = EmbeddingQAFinetuneDataset(queries=..., corpus=corpus, relevant_docs=...)
        EmbeddingAdapterFinetuneEngine(train, base_model).finetune()   # embeds the queries only
    """
    store = get_cache(cache)
    ident = model_identity(embed_model)
    corpus: Dict[str, str] = {}
    dim = None
    bar = tqdm(desc="Reading stored vectors", unit="row", disable=not show_progress)
    for batch in batches if batches is not None else read_stored(vector_store, batch_size):
        if dim is None:
            dim = check_first(batch, embed_model, verify)
        check_batch(batch, dim)
        repeated = next((i for i in batch.ids if i in corpus), None)
        if repeated is not None or len(set(batch.ids)) != len(batch.ids):
            raise ValueError(f"The store holds node id {repeated or batch.ids[0]!r} more than once: ids must be unique; "
                             "delete the duplicate rows (or re-index) first.")
        store.put_many(ident, {EmbeddingCache.key("text", t): v for t, v in zip(batch.texts, batch.vectors)})
        corpus.update(zip(batch.ids, batch.texts))
        bar.update(len(batch.ids))
    bar.close()
    if not corpus:
        raise ValueError("The vector store holds no nodes: write the corpus into it first.")
    return corpus


def check_batch(batch: StoredBatch, dim: int) -> None:
    """Refuse a batch of another shape than the first, or with a vector that is not finite."""
    if batch.vectors.ndim != 2 or batch.vectors.shape[1] != dim or len(batch.vectors) != len(batch.ids) or len(batch.texts) != len(batch.ids):
        raise ValueError(f"Stored vectors of varying shape: {batch.vectors.shape} after {dim}-dimensional ones (at id {batch.ids[0]!r}).")
    bad = np.where(~np.isfinite(batch.vectors).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"The stored vector of node {batch.ids[bad[0]]!r} is not finite (NaN/inf): re-embed that node in the store.")


def check_first(batch: StoredBatch, model: BaseEmbedding, verify: int) -> int:
    """The stored dimension; with ``verify``, proof that ``model`` made these vectors."""
    dim = int(batch.vectors.shape[1])
    if verify:
        n = min(verify, len(batch.texts))
        fresh = np.asarray(call_model(model, batch.texts[:n], "text"), dtype=np.float32)  # the model itself, not a cached vector
        if fresh.shape[1] != dim:
            raise ValueError(f"The store holds {dim}-dimensional vectors but {model.model_name} makes {fresh.shape[1]}-dimensional ones: "
                             "pass the model that built the store.")
        cos = (unit_rows(fresh) * unit_rows(batch.vectors[:n])).sum(1)
        if cos.min() < 0.99:
            raise ValueError(f"The store's vectors were not made by {model.model_name} from the nodes' text (cosine {cos.min():.3f} "
                             f"with its own vector of node {batch.ids[int(cos.argmin())]!r}): pass the model that built the store; "
                             "if it embedded metadata with the text, exclude it (node.excluded_embed_metadata_keys) and re-index.")
    return dim


def check_serving(embed_model: BaseEmbedding, vector_store: Any) -> int:
    """Refuse to serve ``embed_model``'s queries against a store of another dimension; return the store's dimension.

    For an ``AdapterEmbeddingModel`` of a cross-model folder the error names both models. Reads one row."""
    first = next(iter(read_stored(vector_store, batch_size=1)), None)
    if first is None:
        raise ValueError("The vector store holds no nodes: write the corpus into it first.")
    record = getattr(embed_model, "cross_model", None)  # an AdapterEmbeddingModel's cross_model.json
    query_dim = len(embed_model.get_query_embedding("dimension check"))
    check_index_dim(record, query_dim, int(first.vectors.shape[1]), "the vector store")
    return int(first.vectors.shape[1])


def exact_top_k(query_vectors: np.ndarray, batches: Iterator[StoredBatch], k: int) -> Tuple[List[List[str]], np.ndarray]:
    """Exact cosine top ``k`` node ids (and scores) per query over streamed batches, one batch in memory at a time."""
    q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(query_vectors, dtype=np.float32)), dim=1)
    best_s = torch.full((len(q), k), -torch.inf)
    best_i = torch.full((len(q), k), -1, dtype=torch.long)
    named: Dict[int, str] = {}  # ids of the rows in the running top k only: memory does not grow with the store
    seen = 0
    for batch in batches:
        check_index_dim(None, q.shape[1], batch.vectors.shape[1], "the store")
        docs = torch.nn.functional.normalize(torch.as_tensor(batch.vectors), dim=1)
        best_s, best_i = merge_top_k(best_s, best_i, q @ docs.T, seen)
        named = {j: named[j] if j < seen else batch.ids[j - seen] for j in set(best_i.flatten().tolist()) if j >= 0}
        seen += len(batch.ids)
    return [[named[j] for j in row if j >= 0] for row in best_i.tolist()], best_s.numpy()


def store_top_k(vector_store: Any, query_vectors: Sequence[Sequence[float]], k: int) -> List[List[str]]:
    """The store's own search (approximate where it has an ANN index): top ``k`` node ids per query vector."""
    found = []
    for vector in query_vectors:
        result = vector_store.query(VectorStoreQuery(query_embedding=[float(x) for x in vector], similarity_top_k=k))
        found.append([n.node_id for n in result.nodes] if result.nodes else list(result.ids or []))
    return found


def recall_at_k(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean share of the exact top ``k`` that ``found`` returned in its top ``k``."""
    shares = [len(set(f[:k]) & set(e[:k])) / max(1, len(e[:k])) for f, e in zip(found, exact)]
    return float(np.mean(shares)) if shares else float("nan")
