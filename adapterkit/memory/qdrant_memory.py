"""``QdrantMemory``: a corpus memory kept as a collection in the user's Qdrant, looked up by Qdrant's own index.

The same memory as ``CorpusMemory`` and ``PgMemory`` (keys pull a query toward their chunks' frozen
vectors; see ``corpus_memory``), one point per key:

- vector ``key`` (cosine, HNSW-indexed): the key's base query vector;
- vector ``chunk`` (stored, never indexed: ``m=0``): the chunk's frozen vector, returned with each hit;
- payload ``chunk_id`` and ``keyed``.

and one more point per chunk, its marker: the ``chunk`` vector, no ``key`` (never found), and the
payload ``chunk_hash``. A chunk's marker is written after its keys, in the same ordered batch, so a
chunk with a marker is whole: ``update`` and a resumed build redo a chunk whose write was cut off.

A build writes into a collection of its own, ``<name>__build_<token>``, marked unfinished in its
metadata; ``finish()`` marks it finished and points the alias ``name`` at it in one alias operation
(the collection an older build of ``name`` left is dropped afterwards), so an unfinished memory is
never read. ``resume=True`` continues an unfinished build started with the same options. The memory's
options and models are the collection's metadata; an alias or collection ``name`` that is not such a
memory is never touched.

Qdrant has no transactions: ``update`` sends its deletions and insertions as one ordered batch (a
chunk's keys, then its marker); if it fails part-way, run ``update`` again: chunks left without a
marker count as changed, and are written again.

Example::

    with QdrantMemoryWriter(client, "uber_sentences", dim=384) as writer:
        memory_from_store(qdrant_store, base, writer)
    model = AdapterEmbeddingModel(base, "model_output", memory=[QdrantMemory(client, "uber_sentences")])
"""

from __future__ import annotations

import copy
import secrets
import uuid
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from adapterkit.errors import AdapterkitError
from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.memory.database_memory import DatabaseMemory
from adapterkit.memory.pg_memory import LOOKUP_BATCH, check_name
from adapterkit.memory.rows import check_max_keys, checked_hashes, checked_rows
from adapterkit.metrics import unit_rows

TAG = "adapterkit_memory"  # the metadata key that marks a collection as (a build of) a memory
_IDS = uuid.UUID("6f1c1f38-7a0e-4c5e-9a57-3a1d1c2b9e01")  # namespace of point ids
_OPTIONS = ("dim", "key_dim", "weight", "temperature", "top_k", "max_keys", "key_model", "chunk_model")  # a resumed build keeps these


class QdrantMemoryError(AdapterkitError, ValueError):
    """A memory collection is missing, unfinished, or does not fit its metadata."""


def _point_id(chunk_id: str, key: int) -> str:
    """A stable point id for a chunk's ``key``-th key (-1: the chunk held without a key)."""
    return str(uuid.uuid5(_IDS, f"{chunk_id}\x00{key}"))


def _metadata(client: Any, collection: str) -> Dict[str, Any]:
    return dict(client.get_collection(collection).config.metadata or {})


def _alias_target(client: Any, name: str) -> Optional[str]:
    return next((a.collection_name for a in client.get_aliases().aliases if a.alias_name == name), None)


def _check_ours(client: Any, name: str) -> Optional[str]:
    """The collection the memory ``name`` points at (None: no such name), or an error when ``name`` is a
    collection, or an alias of one, that is not this memory (the user's own data is never touched)."""
    if not client.collection_exists(name):
        return None
    target = _alias_target(client, name)
    if target is None or _metadata(client, target).get(TAG, {}).get("name") != name:
        raise QdrantMemoryError(
            f"{name!r} is a collection (or an alias of one) in this Qdrant that is not the adapterkit memory {name!r}: choose another name."
        )
    return target


def _builds(client: Any, name: str) -> Dict[str, bool]:
    """``{collection: ready}`` of the builds of memory ``name`` (finished ones included)."""
    prefix = f"{name}__build_"
    found = {}
    for c in client.get_collections().collections:
        meta = _metadata(client, c.name).get(TAG, {}) if c.name.startswith(prefix) else {}
        if meta.get("name") == name:
            found[c.name] = meta.get("ready") is True
    return found


def _held(client: Any, collection: str, chunk_ids: Sequence[str]) -> Dict[str, str]:
    """``{chunk id: text hash}`` of the given chunks that have a marker (written whole)."""
    from qdrant_client import models

    marker = models.Filter(
        must=[
            models.FieldCondition(key="keyed", match=models.MatchValue(value=False)),
            models.FieldCondition(key="chunk_id", match=models.MatchAny(any=list(chunk_ids))),
        ]
    )
    points, _ = client.scroll(
        collection, scroll_filter=marker, limit=max(1, len(chunk_ids)), with_payload=["chunk_id", "chunk_hash"], with_vectors=False
    )
    return {p.payload["chunk_id"]: p.payload["chunk_hash"] for p in points}


def _write(
    client: Any,
    collection: str,
    drop: Sequence[str],
    chunk_ids: Sequence[str],
    chunk_vectors: np.ndarray,
    key_vectors: np.ndarray,
    key_chunk: np.ndarray,
    hashes: Sequence[str],
) -> int:
    """One ordered batch: delete every point of ``drop``, write the keys, then the markers; returns the points written."""
    from qdrant_client import models

    keys, number = [], np.zeros(len(chunk_ids), dtype=np.int64)
    for row, vector in zip(key_chunk.tolist(), key_vectors):
        keys.append(
            models.PointStruct(
                id=_point_id(chunk_ids[row], int(number[row])),
                vector={"key": vector.tolist(), "chunk": chunk_vectors[row].tolist()},
                payload={"chunk_id": chunk_ids[row], "keyed": True},
            )
        )
        number[row] += 1
    markers = [
        models.PointStruct(
            id=_point_id(c, -1),
            vector={"chunk": chunk_vectors[row].tolist()},
            payload={"chunk_id": c, "keyed": False, "chunk_hash": hashes[row]},
        )
        for row, c in enumerate(chunk_ids)
    ]
    ops: List[Any] = []
    if drop:
        ops.append(
            models.DeleteOperation(
                delete=models.FilterSelector(
                    filter=models.Filter(must=[models.FieldCondition(key="chunk_id", match=models.MatchAny(any=list(drop)))])
                )
            )
        )
    ops += [models.UpsertOperation(upsert=models.PointsList(points=part)) for part in (keys, markers) if part]
    if ops:
        client.batch_update_points(collection, update_operations=ops, wait=True)
    return len(keys) + len(markers)


class QdrantMemoryWriter:
    """Build a ``QdrantMemory`` batch by batch; ``finish()`` (or leaving the ``with`` block without an
    error) makes it the memory ``name`` in one alias operation.

    Args:
        client: a ``qdrant_client.QdrantClient`` (a server, or a local folder).
        name: the memory's name, an alias (lower-case letters, digits, _); never an existing collection.
        dim: the chunk vectors' dimension.
        key_dim: the keys' dimension (default ``dim``).
        resume: continue an unfinished build of ``name``; else start afresh (unfinished builds are dropped).
        key_model, chunk_model: identities (``model_identity``) of the models behind keys and chunk vectors.
        options: weight, temperature, top_k, max_keys (as ``CorpusMemory``).
    """

    def __init__(
        self,
        client: Any,
        name: str,
        dim: int,
        key_dim: Optional[int] = None,
        resume: bool = False,
        key_model: Optional[str] = None,
        chunk_model: Optional[str] = None,
        **options: Any,
    ) -> None:
        from qdrant_client import models

        unknown = set(options) - {"weight", "temperature", "top_k", "max_keys"}
        if unknown:
            raise ValueError(f"Unknown QdrantMemory options {sorted(unknown)}: use weight, temperature, top_k, max_keys.")
        checked = CorpusMemory(dim, key_dim=key_dim, **options)  # the same checks as a local memory's
        self.client, self.name, self.dim, self.key_dim = client, check_name(name), checked.dim, checked.key_dim
        self.options: Dict[str, Any] = {
            "weight": checked.weight,
            "temperature": checked.temperature,
            "top_k": checked.top_k,
            "max_keys": checked.max_keys,
            "key_model": key_model,
            "chunk_model": chunk_model,
        }
        live = _check_ours(client, name)
        builds = _builds(client, name)
        for old, ready in builds.items():  # a finished build no alias points at was cut off before its swap: nothing reads it
            if ready and old != live:
                client.delete_collection(old)
        unfinished = [c for c, ready in builds.items() if not ready]
        wanted = {"dim": self.dim, "key_dim": self.key_dim, **self.options}
        if resume and unfinished:
            self.collection = unfinished[0]
            before = _metadata(client, self.collection)[TAG]
            differ = [k for k in _OPTIONS if before.get(k) != wanted[k]]
            if differ:
                raise QdrantMemoryError(
                    f"The unfinished build of {name!r} was started with other {differ} "
                    f"({ {k: before.get(k) for k in differ} }): start afresh with resume=False, or resume with those."
                )
            return
        for old in unfinished:
            client.delete_collection(old)
        self.collection = f"{name}__build_{secrets.token_hex(4)}"
        client.create_collection(
            self.collection,
            vectors_config={
                "key": models.VectorParams(size=self.key_dim, distance=models.Distance.COSINE),
                "chunk": models.VectorParams(size=self.dim, distance=models.Distance.COSINE, hnsw_config=models.HnswConfigDiff(m=0)),
            },
            metadata={TAG: {"name": name, "ready": False, **wanted}},
        )
        with warnings.catch_warnings():  # a local Qdrant says its payload indexes do nothing; a server's find chunk ids fast
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in ("chunk_id", "keyed"):
                client.create_payload_index(
                    self.collection,
                    field,
                    field_schema=models.PayloadSchemaType.KEYWORD if field == "chunk_id" else models.PayloadSchemaType.BOOL,
                )

    def add(
        self,
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        text_hashes: Optional[Sequence[str]] = None,
    ) -> int:
        """Write chunks and their keys; a chunk already written whole (a resumed build) is skipped, one cut off is
        written again. Returns the points written."""
        ids = [str(c) for c in chunk_ids]
        chunk_vectors, key_vectors, key_chunk = checked_rows(
            ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim, self.options["max_keys"]
        )
        hashes = checked_hashes(ids, text_hashes)
        held = _held(self.client, self.collection, ids)
        new = np.array([c not in held for c in ids], dtype=bool)
        if not new.any():
            return 0
        keep = new[key_chunk] if len(key_chunk) else np.zeros(0, dtype=bool)
        renumber = np.cumsum(new) - 1
        fresh = [c for c, n in zip(ids, new) if n]
        return _write(
            self.client,
            self.collection,
            fresh,
            fresh,
            chunk_vectors[new],
            key_vectors[keep],
            renumber[key_chunk[keep]],
            [h for h, n in zip(hashes, new) if n],
        )

    def finish(self) -> "QdrantMemory":
        """Mark the build finished and point the alias ``name`` at it; an older build's collection is dropped."""
        from qdrant_client import models

        older = _check_ours(self.client, self.name)  # made since this writer opened?
        meta = _metadata(self.client, self.collection)[TAG]
        if meta["ready"] is False:
            self.client.update_collection(self.collection, metadata={TAG: {**meta, "ready": True}})
        if older != self.collection:
            swap = ([models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.name))] if older else []) + [
                models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=self.collection, alias_name=self.name))
            ]
            self.client.update_collection_aliases(change_aliases_operations=swap)
            if older:
                self.client.delete_collection(older)
        return QdrantMemory(self.client, self.name)

    def __enter__(self) -> "QdrantMemoryWriter":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.finish()  # else the build stays, unread, for resume=True


class QdrantMemory(DatabaseMemory):
    """A finished memory collection, read by Qdrant's HNSW index (see the module's docstring).

    Args:
        client: a ``qdrant_client.QdrantClient``.
        name: the memory's name (the alias ``QdrantMemoryWriter`` made).
        hnsw_ef: HNSW candidates per lookup (Qdrant's ``hnsw_ef``; default Qdrant's own, at least ``top_k``).
    """

    def __init__(self, client: Any, name: str, hnsw_ef: Optional[int] = None) -> None:
        self.client, self.name = client, check_name(name)
        target = _check_ours(client, name)
        if target is None:
            raise QdrantMemoryError(
                f"No finished memory {name!r} in this Qdrant (an unfinished build is never read): build it "
                "with QdrantMemoryWriter, or continue a build with QdrantMemoryWriter(..., resume=True)."
            )
        meta: Any = _metadata(client, target).get(TAG)  # any JSON value until checked below (None: a damaged record)
        try:
            self.dim, self.key_dim = int(meta["dim"]), int(meta["key_dim"])
            self.weight, self.temperature, self.top_k = float(meta["weight"]), float(meta["temperature"]), int(meta["top_k"])
            self.max_keys = check_max_keys(meta.get("max_keys"))
            self.key_model, self.chunk_model = meta.get("key_model"), meta.get("chunk_model")
            ready = meta["ready"] is True
        except (KeyError, TypeError, ValueError) as exc:
            raise QdrantMemoryError(f"The metadata of memory {name!r} ({target}) is damaged ({exc}): build the memory again.") from exc
        if not ready:
            raise QdrantMemoryError(f"Memory {name!r} points at an unfinished build ({target}): build the memory again.")
        self.hnsw_ef = None if hnsw_ef is None else max(int(hnsw_ef), self.top_k)

    def __len__(self) -> int:
        return len(self.chunk_hashes())

    def key_count(self) -> int:
        from qdrant_client import models

        keyed = models.Filter(must=[models.FieldCondition(key="keyed", match=models.MatchValue(value=True))])
        return int(self.client.count(self.name, count_filter=keyed, exact=True).count)

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "QdrantMemory":
        """The same collection with another pull; this one is left as it is."""
        other = copy.copy(self)
        other.weight = float(weight)
        other.temperature = float(self.temperature if temperature is None else temperature)
        return other

    # ------------------------------------------------------------------ query time

    def lookup(self, queries: np.ndarray) -> Tuple[np.ndarray, List[List[str]], np.ndarray]:
        """Each query's top keys: cosine ``(Q, k)`` (-inf where nothing was found), their chunk ids, and
        their chunk vectors ``(Q, k, dim)``; one batch request."""
        from qdrant_client import models

        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.key_dim:
            raise ValueError(f"Memory {self.name!r} looks up {self.key_dim}-dimensional base query vectors, got shape {q.shape}.")
        q = unit_rows(q)
        k = self.top_k
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        chunks = np.zeros((len(q), k, self.dim), dtype=np.float32)
        ids: List[List[str]] = [[] for _ in range(len(q))]
        params = models.SearchParams(hnsw_ef=self.hnsw_ef) if self.hnsw_ef else None
        answers = []
        for start in range(0, len(q), LOOKUP_BATCH):  # bounds a request's size
            requests = [
                models.QueryRequest(
                    query=row.tolist(), using="key", limit=k, with_payload=["chunk_id"], with_vector=["chunk"], params=params
                )
                for row in q[start : start + LOOKUP_BATCH]
            ]
            try:
                answers += self.client.query_batch_points(self.name, requests=requests)
            except Exception as exc:  # a lost server, a dropped or changed collection
                raise QdrantMemoryError(
                    f"Looking up memory {self.name!r} failed ({type(exc).__name__}: {str(exc).strip()[:300]}): check "
                    "that the server is up; if the collection was changed or dropped, build the memory again."
                ) from exc
        for row, answer in enumerate(answers):
            for place, point in enumerate(answer.points[:k]):
                chunk = point.vector.get("chunk") if isinstance(point.vector, dict) else None
                if chunk is None or len(chunk) != self.dim:
                    raise QdrantMemoryError(
                        f"Memory {self.name!r} returned a key without its {self.dim}-dimensional chunk vector: "
                        "the collection was changed; build the memory again."
                    )
                sims[row, place] = point.score
                chunks[row, place] = chunk
                ids[row].append(point.payload["chunk_id"])
        return sims, ids, chunks

    # ------------------------------------------------------------------ following the index

    def chunk_hashes(self) -> Dict[str, str]:
        """``{chunk id: text hash}`` of every chunk held whole (its marker written)."""
        from qdrant_client import models

        marker = models.Filter(must=[models.FieldCondition(key="keyed", match=models.MatchValue(value=False))])
        found: Dict[str, str] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, scroll_filter=marker, limit=1000, offset=offset, with_payload=["chunk_id", "chunk_hash"], with_vectors=False
            )
            found.update((p.payload["chunk_id"], p.payload["chunk_hash"]) for p in points)
            if offset is None:
                return found

    def _replace(
        self,
        drop: Sequence[str],
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        hashes: Sequence[str],
    ) -> None:
        _write(self.client, self.name, drop, chunk_ids, chunk_vectors, key_vectors, key_chunk, hashes)

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop these chunks and their keys; returns how many chunks were held."""
        ids = list(dict.fromkeys(str(c) for c in chunk_ids))
        held = self.chunk_hashes()
        _write(
            self.client,
            self.name,
            ids,
            [],
            np.zeros((0, self.dim), np.float32),
            np.zeros((0, self.key_dim), np.float32),
            np.zeros(0, np.int64),
            [],
        )
        return sum(c in held for c in ids)

    def get_config_dict(self) -> Dict[str, Any]:
        return {
            "kind": "qdrant",
            "name": self.name,
            "dim": self.dim,
            "key_dim": self.key_dim,
            "weight": self.weight,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "hnsw_ef": self.hnsw_ef,
            "max_keys": self.max_keys,
            "key_model": self.key_model,
            "chunk_model": self.chunk_model,
        }

    def close(self) -> None:
        """Nothing to release: the client is the caller's (close it when done)."""
