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

import hashlib
import heapq
import os
import struct
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

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
from adapterkit.stores.postgres import quoted, require_table, store_table

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
        raise TypeError(
            f"Reading stored vectors supports {SUPPORTED}, not {kind}. For another store, read its "
            "(id, text, vector) rows yourself and pass StoredBatch objects to cache_stored_vectors(batches=...)."
        )


def _read_pgvector(store: Any, batch_size: int) -> Iterator[StoredBatch]:
    """Stream the table with ``COPY ... TO STDOUT (FORMAT binary)``: vectors arrive as float4, nothing is parsed from text."""
    import sqlalchemy
    from psycopg2 import sql

    schema, name = store_table(store)  # checked: no NUL (libpq would end the name there), at most 63 bytes
    table = quoted(schema, name)
    statement = sql.SQL("COPY (SELECT node_id, text, embedding::vector FROM {} ORDER BY id) TO STDOUT WITH (FORMAT binary)").format(
        sql.Identifier(schema, name)
    )
    engine = sqlalchemy.create_engine(store.connection_string)
    pooled = engine.raw_connection()
    try:
        require_table(pooled.driver_connection, schema, name)
    except BaseException:
        pooled.close()
        engine.dispose()
        raise
    read_fd, write_fd = os.pipe()
    failed: List[BaseException] = []

    def produce() -> None:  # the driver pushes the whole COPY into the pipe; the reader below takes it batch by batch
        try:
            # set: require_table above has already queried through this connection
            with os.fdopen(write_fd, "wb") as sink, cast(Any, pooled.driver_connection).cursor() as cur:
                cur.copy_expert(statement, sink)
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
        raise RuntimeError(
            f"Reading {table} failed ({type(why).__name__}: {str(why).strip()}); the batches given before "
            "it are valid, the rest were not read. Read again once the server is back."
        ) from why


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
        points, offset = store.client.scroll(
            collection_name=store.collection_name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
        )
        if points:
            nodes = [metadata_dict_to_node(p.payload) for p in points]
            vectors = [p.vector if not isinstance(p.vector, dict) else next(iter(p.vector.values())) for p in points]
            yield StoredBatch(
                [n.node_id for n in nodes],
                [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
                np.asarray(vectors, dtype=np.float32),
            )
        if offset is None:
            return


VERIFY_ROWS = 32  # stored rows embedded again before a store's vectors are trusted (a seeded sample of every row)


def cache_stored_vectors(
    vector_store: Any,
    embed_model: BaseEmbedding,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    batch_size: int = 10_000,
    verify: int = VERIFY_ROWS,
    batches: Optional[Iterator[StoredBatch]] = None,
    show_progress: bool = False,
    seed: int = 0,
) -> Dict[str, str]:
    """Put the store's vectors into the embedding cache as ``embed_model``'s vectors of the stored texts,
    once a sample of them proved that ``embed_model`` made them.

    Every row must be finite and non-zero. The vectors are written under a staging identity while the
    store is read; then the first row and a seeded sample of the others (the smallest hashes of seed and
    node id, so any row may be drawn, wherever it sits), ``verify`` rows in all, are embedded again, and the vectors
    become the model's own cache entries only if every one matches (cosine >= 0.99). A store that fails
    leaves nothing in the cache: no later request for the model's vector of a text is answered by it.

    Args:
        vector_store: a LlamaIndex ``PGVectorStore`` or ``QdrantVectorStore`` built with ``embed_model``.
        embed_model: the base model that made the stored vectors (its cache identity is used).
        cache: the embedding cache (an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``).
        batch_size: rows read per round trip.
        verify: how many sampled rows ``embed_model`` embeds again to check the store (at least 1).
        batches: ``StoredBatch`` objects to use instead of reading ``vector_store`` (any other store).
        show_progress: a tqdm bar over the rows.
        seed: seeds the sample of rows checked.

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
    check = StoreCheck(verify, seed)
    staging = f"unverified:{uuid.uuid4().hex}:{ident}"  # never asked for by any model: nothing reads these rows
    corpus: Dict[str, str] = {}
    dim = None
    bar = tqdm(desc="Reading stored vectors", unit="row", disable=not show_progress)
    try:
        for batch in batches if batches is not None else read_stored(vector_store, batch_size):
            dim = dim or stored_dim(batch)
            check_batch(batch, dim)
            check.first(batch, embed_model, dim)
            repeated = next((i for i in batch.ids if i in corpus), None)
            if repeated is not None or len(set(batch.ids)) != len(batch.ids):
                raise ValueError(
                    f"The store holds node id {repeated or batch.ids[0]!r} more than once: ids must be unique; "
                    "delete the duplicate rows (or re-index) first."
                )
            store.put_many(staging, {EmbeddingCache.key("text", t): v for t, v in zip(batch.texts, batch.vectors)})
            check.offer(batch)
            corpus.update(zip(batch.ids, batch.texts))
            bar.update(len(batch.ids))
        bar.close()
        if not corpus or dim is None:  # dim is None only when no batch was read
            raise ValueError("The vector store holds no nodes: write the corpus into it first.")
        check.verify(embed_model, dim)
        store.move(staging, ident)
    finally:
        store.drop(staging)  # a store that failed, or a read cut off: its vectors never reach the model's entries
    return corpus


def id_hash(node_id: str, seed: int) -> int:
    """A seeded 63-bit hash of a node id (samples take the smallest)."""
    digest = hashlib.blake2b(node_id.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") >> 1


def id_hashes(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.fromiter((id_hash(i, seed) for i in ids), dtype=np.int64, count=len(ids))


class StoreCheck:
    """Proof that a model made a store's vectors: its first row at once (a wrong model fails before the
    whole store is read), then a seeded sample of the other rows (``verify``): ``size`` rows in all.

    Args:
        size: rows checked (at least 1; all of them in a smaller store).
        seed: the sample's seed (the smallest hashes of seed and node id: any row may be drawn).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"verify is how many stored rows are embedded again to check the store (a whole number >= 1), got {size!r}.")
        self.size, self.seed = size, seed
        self._held: List[Tuple[int, str, str, np.ndarray]] = []  # (-hash, id, text, vector): a max-heap of the smallest hashes
        self._first: Optional[str] = None

    def first(self, batch: StoredBatch, model: BaseEmbedding, dim: int) -> None:
        """Check the store's first row now (later calls do nothing)."""
        if self._first is None and batch.ids:
            self._first = batch.ids[0]
            _compare(model, batch.ids[:1], batch.texts[:1], batch.vectors[:1], dim)

    def offer(self, batch: StoredBatch, hashes: Optional[np.ndarray] = None) -> None:
        """Keep the rows of ``batch`` that belong to the sample so far (``hashes``: their id hashes, if known)."""
        h = id_hashes(batch.ids, self.seed) if hashes is None else hashes
        room = self.size - 1  # the first row is checked already
        if not room:
            return
        for r in np.flatnonzero(h < -self._held[0][0]) if len(self._held) == room else range(len(h)):
            if batch.ids[r] == self._first:
                continue
            item = (-int(h[r]), batch.ids[r], batch.texts[r], np.array(batch.vectors[r], dtype=np.float32))
            if len(self._held) < room:
                heapq.heappush(self._held, item)
            elif item[0] > self._held[0][0]:
                heapq.heapreplace(self._held, item)

    def verify(self, model: BaseEmbedding, dim: int) -> int:
        """Embed the sample again and compare; returns how many rows were checked."""
        rows = sorted(self._held, key=lambda item: -item[0])
        if rows:
            _compare(model, [r[1] for r in rows], [r[2] for r in rows], np.stack([r[3] for r in rows]), dim)
        return len(rows) + (self._first is not None)


def _compare(model: BaseEmbedding, ids: List[str], texts: List[str], stored: np.ndarray, dim: int) -> None:
    """Refuse stored vectors that ``model`` does not give for their texts, naming the first such row."""
    fresh = np.asarray(call_model(model, list(texts), "text"), dtype=np.float32)  # the model itself, not a cached vector
    if fresh.ndim != 2 or fresh.shape[1] != dim:
        raise ValueError(
            f"The store holds {dim}-dimensional vectors but {model.model_name} makes {fresh.shape[-1]}-dimensional ones: "
            "pass the model that built the store."
        )
    cos = (unit_rows(fresh) * unit_rows(stored)).sum(1)
    if cos.min() < 0.99:
        at = int(cos.argmin())
        raise ValueError(
            f"The stored vector of node {ids[at]!r} was not made by {model.model_name} from its text (cosine "
            f"{cos[at]:.3f} with the model's own; {int((cos < 0.99).sum())} of {len(ids)} checked rows differ). Likely "
            "causes: the store was built by another model or another version of it (pass that model), or the text "
            "embedded was not the stored text (metadata or a prefix added: exclude it and re-index). Nothing of this "
            "store was put in the embedding cache."
        )


def stored_dim(batch: StoredBatch) -> int:
    """The dimension of a batch's vectors (an error for a batch without them)."""
    if batch.vectors.ndim != 2 or not batch.vectors.shape[1]:
        raise ValueError("The store's rows hold no vectors: write the corpus into it with its embeddings first.")
    return int(batch.vectors.shape[1])


def check_batch(batch: StoredBatch, dim: int) -> None:
    """Refuse a batch of another shape than the first, or with a vector that is not finite or is all zeros."""
    if (
        batch.vectors.ndim != 2
        or batch.vectors.shape[1] != dim
        or len(batch.vectors) != len(batch.ids)
        or len(batch.texts) != len(batch.ids)
    ):
        raise ValueError(f"Stored vectors of varying shape: {batch.vectors.shape} after {dim}-dimensional ones (at id {batch.ids[0]!r}).")
    bad = np.where(~np.isfinite(batch.vectors).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"The stored vector of node {batch.ids[bad[0]]!r} is not finite (NaN/inf): re-embed that node in the store.")
    zero = np.flatnonzero(~np.any(batch.vectors, axis=1))
    if len(zero):
        raise ValueError(
            f"The stored vector of node {batch.ids[zero[0]]!r} is all zeros (an embedding that failed, or a placeholder): "
            "re-embed that node in the store."
        )


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
