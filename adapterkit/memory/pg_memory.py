"""``PgMemory``: a corpus memory kept as a table in the user's PostgreSQL + pgvector, looked up by its ANN index.

A ``CorpusMemory`` holds its keys in local ``.npy`` files: fine up to a few million keys on one
machine. At tens of millions the keys belong in the database the index already lives in. ``PgMemory``
is the same memory (keys pull a query toward their chunks' frozen vectors; see ``corpus_memory``) as
one table, a row per key::

    chunk_id text, chunk_hash text, key vector(key_dim) NULL, chunk vector(dim)

with an ANN index (cosine) on ``key``: HNSW (the default), or IVFFlat, which builds far faster on
millions of keys. A query's ``top_k`` keys and their chunks' vectors come back in
one round trip for a whole batch of queries (a ``LATERAL`` join over the batch), and the pull is
computed here exactly as ``CorpusMemory.pull`` does. A chunk without a 6+ word sentence is one row with
a NULL key: held, so that ``update`` knows it, never found.

Writes are transactions: ``add_chunks``, ``remove`` and ``update`` either happen whole or not at all.
A memory is built by ``PgMemoryWriter`` into a staging table and becomes visible only when
``finish()`` renames it in one transaction and marks it ready in ``adapterkit_memories``; a build that
died (the server went away, the process was killed) leaves a staging table that is never read, and a
new writer with ``resume=True`` continues it, skipping the chunks already written.

Example::

    with PgMemoryWriter(store.connection_string, "uber_sentences", dim=384) as writer:
        for ids, chunk_vecs, key_vecs, key_chunk in batches:
            writer.add(ids, chunk_vecs, key_vecs, key_chunk)
    memory = PgMemory(store.connection_string, "uber_sentences")
    model = AdapterEmbeddingModel(base, "model_output", memory=[memory])
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.cache import embed_texts
from adapterkit.data.documents import chunk_sentences
from adapterkit.memory.corpus_memory import _text_hash, apply_memories, pull_from
from adapterkit.metrics import unit_rows

META_TABLE = "adapterkit_memories"  # name, config (JSON), ready: a memory is read only once ready
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")  # PostgreSQL names stop at 63 bytes; the staging table and indexes add 19


class PgMemoryError(ValueError):
    """A memory table is missing, unfinished, or does not fit its record."""


def _connect(url: str) -> Any:
    """A DB-API (psycopg2) connection from a SQLAlchemy URL (what ``PGVectorStore.connection_string`` holds)."""
    import psycopg2
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"A memory table lives in PostgreSQL with pgvector, not {parsed.get_backend_name()!r}.")
    engine = sqlalchemy.create_engine(parsed.set(drivername="postgresql+psycopg2"))  # the transactions below are psycopg2's
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return psycopg2.connect(*args, **kwargs)


def _lost(name: str, exc: Exception) -> PgMemoryError:
    return PgMemoryError(f"Writing memory {name!r} failed ({type(exc).__name__}: {str(exc).strip()}); that batch was rolled back and "
                         "nothing unfinished is ever read. Continue with PgMemoryWriter(..., resume=True) once the server is back.")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"A memory name is 1-40 lower-case letters, digits or _ (starting with a letter or _), got {name!r}.")
    return name


def _vector_field(vector: Optional[np.ndarray]) -> bytes:
    """One pgvector value in COPY's binary format (NULL when ``vector`` is None)."""
    if vector is None:
        return struct.pack("!i", -1)
    data = np.asarray(vector, dtype=">f4").tobytes()
    return struct.pack("!ihh", 4 + len(data), len(vector), 0) + data


def _text_field(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!i", len(data)) + data


COPY_ROWS = 8192  # rows per COPY statement, all in one transaction: what is held in memory at once while writing


def _copy_rows(cur: Any, table: str, rows: Iterable[tuple]) -> int:
    """COPY (chunk_id, chunk_hash, key, chunk) rows in the binary format, ``COPY_ROWS`` at a time; returns how many."""
    head, tail = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0), struct.pack("!h", -1)
    parts: List[bytes] = []
    n = 0
    for chunk_id, chunk_hash, key, chunk in rows:
        parts.append(struct.pack("!h", 4) + _text_field(chunk_id) + _text_field(chunk_hash) + _vector_field(key) + _vector_field(chunk))
        n += 1
        if len(parts) == COPY_ROWS:
            cur.copy_expert(f"COPY {table} (chunk_id, chunk_hash, key, chunk) FROM STDIN WITH (FORMAT binary)", io.BytesIO(b"".join([head, *parts, tail])))
            parts = []
    if parts:
        cur.copy_expert(f"COPY {table} (chunk_id, chunk_hash, key, chunk) FROM STDIN WITH (FORMAT binary)", io.BytesIO(b"".join([head, *parts, tail])))
    return n


def _rows(chunk_ids: Sequence[str], chunk_vectors: np.ndarray, key_vectors: np.ndarray, key_chunk: np.ndarray,
          hashes: Sequence[str]) -> Iterable[tuple]:
    """A row per key, and a keyless row for a chunk without keys."""
    has_key = np.zeros(len(chunk_ids), dtype=bool)
    for key, owner in zip(key_vectors, key_chunk.tolist()):
        has_key[owner] = True
        yield str(chunk_ids[owner]), hashes[owner], key, chunk_vectors[owner]
    for row in np.flatnonzero(~has_key).tolist():
        yield str(chunk_ids[row]), hashes[row], None, chunk_vectors[row]


def _checked(chunk_ids: Sequence[str], chunk_vectors: np.ndarray, key_vectors: np.ndarray, key_chunk: np.ndarray,
             dim: int, key_dim: int) -> tuple:
    chunk_vectors = unit_rows(np.asarray(chunk_vectors, dtype=np.float32).reshape(len(chunk_ids), dim))
    key_vectors = unit_rows(np.asarray(key_vectors, dtype=np.float32).reshape(-1, key_dim))
    key_chunk = np.asarray(key_chunk, dtype=np.int64).reshape(len(key_vectors))
    if not (np.isfinite(chunk_vectors).all() and np.isfinite(key_vectors).all()):
        raise ValueError("Memory vectors must be finite (a NaN or inf came from the base model).")
    if len(key_chunk) and not 0 <= key_chunk.min() <= key_chunk.max() < len(chunk_ids):
        raise ValueError("key_chunk must hold positions in chunk_ids.")
    if len(set(map(str, chunk_ids))) != len(chunk_ids):
        raise ValueError("chunk_ids holds an id more than once: a chunk's keys go in one call.")
    return chunk_vectors, key_vectors, key_chunk


def _create(cur: Any, table: str, dim: int, key_dim: int) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (row_id bigserial PRIMARY KEY, chunk_id text NOT NULL, "
                f"chunk_hash text NOT NULL, key vector({key_dim}), chunk vector({dim}) NOT NULL)")
    cur.execute(f"CREATE INDEX IF NOT EXISTS {table}_chunk_id ON {table} (chunk_id)")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, config text NOT NULL, ready boolean NOT NULL)")


class PgMemoryWriter:
    """Build a ``PgMemory`` batch by batch into a staging table; ``finish()`` (or leaving the ``with``
    block without an error) indexes it and makes it the memory ``name`` in one transaction.

    Args:
        url: the server (a SQLAlchemy URL, e.g. ``PGVectorStore.connection_string``).
        name: the memory's table name.
        dim: the chunk vectors' dimension.
        key_dim: the keys' dimension (default ``dim``; another when queries come from another model).
        resume: continue a staging table an earlier writer left (its chunks are skipped); else start afresh.
        index: the keys' ANN index, ``"hnsw"`` or ``"ivfflat"``.
        lists: IVFFlat lists (default: the square root of the key count).
        options: weight, temperature, top_k (as ``CorpusMemory``).
    """

    def __init__(self, url: str, name: str, dim: int, key_dim: Optional[int] = None, resume: bool = False, index: str = "hnsw",
                 lists: Optional[int] = None, **options: Any) -> None:
        if index not in ("hnsw", "ivfflat"):
            raise ValueError(f"index must be 'hnsw' or 'ivfflat', got {index!r}.")
        self.url, self.name, self.dim = url, _check_name(name), int(dim)
        self.key_dim = int(key_dim or dim)
        self.index, self.lists = index, lists
        self.options = {"weight": 0.25, "temperature": 100.0, "top_k": 32, **options}
        unknown = set(self.options) - {"weight", "temperature", "top_k"}
        if unknown:
            raise ValueError(f"Unknown PgMemory options {sorted(unknown)}: use weight, temperature, top_k.")
        self.staging = f"{name}__building"
        self._conn = _connect(url)
        with self._conn, self._conn.cursor() as cur:
            if not resume:
                cur.execute(f"DROP TABLE IF EXISTS {self.staging}")
            _create(cur, self.staging, self.dim, self.key_dim)
            cur.execute(f"SELECT DISTINCT chunk_id FROM {self.staging}")
            self.written: Set[str] = {r[0] for r in cur.fetchall()}  # by an earlier writer (resume); skipped by add

    def add(self, chunk_ids: Sequence[str], chunk_vectors: np.ndarray, key_vectors: np.ndarray, key_chunk: np.ndarray,
            text_hashes: Optional[Sequence[str]] = None) -> int:
        """Append chunks and their keys (one transaction); chunks a resumed build already holds are skipped."""
        chunk_vectors, key_vectors, key_chunk = _checked(chunk_ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim)
        hashes = list(text_hashes) if text_hashes is not None else [""] * len(chunk_ids)
        new = np.array([str(c) not in self.written for c in chunk_ids], dtype=bool)
        if not new.any():
            return 0
        keep = new[key_chunk] if len(key_chunk) else np.zeros(0, dtype=bool)
        renumber = np.cumsum(new) - 1
        ids = [str(c) for c, n in zip(chunk_ids, new) if n]
        import psycopg2

        try:
            with self._conn, self._conn.cursor() as cur:
                n = _copy_rows(cur, self.staging, _rows(ids, chunk_vectors[new], key_vectors[keep], renumber[key_chunk[keep]],
                                                       [h for h, n in zip(hashes, new) if n]))
        except psycopg2.Error as exc:
            raise _lost(self.name, exc) from exc
        return n

    def finish(self) -> "PgMemory":
        """Index the keys and make the staging table the memory ``name`` (replacing an older one) in one transaction."""
        config = {"dim": self.dim, "key_dim": self.key_dim, "index": self.index, **self.options}
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SET LOCAL maintenance_work_mem = '1GB'")  # an index built in memory builds many times faster
            if self.index == "ivfflat":
                cur.execute(f"SELECT count(key) FROM {self.staging}")
                lists = self.lists or max(1, int(cur.fetchone()[0] ** 0.5))
                cur.execute(f"CREATE INDEX {self.staging}_key ON {self.staging} USING ivfflat (key vector_cosine_ops) WITH (lists = {int(lists)})")
                config["lists"] = int(lists)
            else:
                cur.execute(f"CREATE INDEX {self.staging}_key ON {self.staging} USING hnsw (key vector_cosine_ops)")
            cur.execute(f"DROP TABLE IF EXISTS {self.name}")
            cur.execute(f"ALTER TABLE {self.staging} RENAME TO {self.name}")
            cur.execute(f"ALTER INDEX {self.staging}_key RENAME TO {self.name}_key")
            cur.execute(f"ALTER INDEX {self.staging}_chunk_id RENAME TO {self.name}_chunk_id")
            cur.execute(f"INSERT INTO {META_TABLE} (name, config, ready) VALUES (%s, %s, true) "
                        "ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, ready = true", (self.name, json.dumps(config)))
        self._conn.close()
        return PgMemory(self.url, self.name)

    def __enter__(self) -> "PgMemoryWriter":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.finish()
        else:
            self._conn.close()  # the staging table stays, unread, for resume=True


class PgMemory:
    """A finished memory table, read by its ANN index (see the module's docstring).

    Args:
        url: the server (a SQLAlchemy URL).
        name: the memory's table, as written by ``PgMemoryWriter``.
        ef_search: HNSW candidates per lookup (pgvector's ``hnsw.ef_search``; at least ``top_k``).
        probes: IVFFlat lists scanned per lookup (``ivfflat.probes``); default the square root of the
            lists, pgvector's own advice (1M keys, 1,000 lists: 32 probes).
    """

    def __init__(self, url: str, name: str, ef_search: int = 100, probes: Optional[int] = None) -> None:
        self.url, self.name = url, _check_name(name)
        self._conn = _connect(url)
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (META_TABLE,))
            record = None
            if cur.fetchone()[0] is not None:
                cur.execute(f"SELECT config, ready FROM {META_TABLE} WHERE name = %s", (name,))
                record = cur.fetchone()
        if record is None or not record[1]:
            raise PgMemoryError(f"No finished memory {name!r} on this server (an unfinished build is never read): build it "
                                "with PgMemoryWriter, or continue a build with PgMemoryWriter(..., resume=True).")
        try:
            config = json.loads(record[0])
            self.dim, self.key_dim = int(config["dim"]), int(config["key_dim"])
            self.weight, self.temperature, self.top_k = float(config["weight"]), float(config["temperature"]), int(config["top_k"])
            self.index = config.get("index", "hnsw")
            lists = int(config.get("lists", 1))
        except (ValueError, KeyError, TypeError) as exc:
            raise PgMemoryError(f"The record of memory {name!r} in {META_TABLE} is damaged ({exc}): build the memory again.") from exc
        self.ef_search = max(int(ef_search), self.top_k)
        self.probes = int(probes) if probes is not None else max(1, math.ceil(math.sqrt(lists)))

    def __len__(self) -> int:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"SELECT count(DISTINCT chunk_id) FROM {self.name}")
            return int(cur.fetchone()[0])

    def key_count(self) -> int:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"SELECT count(key) FROM {self.name}")
            return int(cur.fetchone()[0])

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "PgMemory":
        """The same table with another pull (a new connection); this one is left as it is."""
        other = PgMemory(self.url, self.name, self.ef_search, self.probes)
        other.weight = float(weight)
        other.temperature = float(self.temperature if temperature is None else temperature)
        return other

    # ------------------------------------------------------------------ query time

    def lookup(self, queries: np.ndarray) -> Tuple[np.ndarray, List[List[str]], np.ndarray]:
        """Each query's top keys: cosine ``(Q, k)`` (-inf where nothing was found), their chunk ids, and
        their chunk vectors ``(Q, k, dim)``."""
        q = unit_rows(np.asarray(queries, dtype=np.float32).reshape(-1, self.key_dim))
        k = self.top_k
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        chunks = np.zeros((len(q), k, self.dim), dtype=np.float32)
        ids: List[List[str]] = [[] for _ in range(len(q))]
        texts = ["[" + ",".join(f"{x:.9g}" for x in row) + "]" for row in q]
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"SET LOCAL hnsw.ef_search = {self.ef_search}" if self.index == "hnsw" else f"SET LOCAL ivfflat.probes = {self.probes}")
            cur.execute(f"SELECT q.i, m.cos, m.chunk_id, m.chunk::real[] FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, i) "
                        f"CROSS JOIN LATERAL (SELECT 1 - (key <=> q.v::vector) AS cos, chunk_id, chunk FROM {self.name} "
                        f"WHERE key IS NOT NULL ORDER BY key <=> q.v::vector LIMIT {k}) AS m", (texts,))
            for i, cos, chunk_id, chunk in cur.fetchall():
                row = int(i) - 1
                place = len(ids[row])
                sims[row, place], chunks[row, place] = cos, chunk
                ids[row].append(chunk_id)
        return sims, ids, chunks

    def pull(self, queries: torch.Tensor) -> torch.Tensor:
        """As ``CorpusMemory.pull``: ``weight * sum softmax(temperature * cos) * chunk`` over the top keys."""
        if not len(queries) or not self.weight:
            return torch.zeros(len(queries), self.dim, dtype=torch.float32, device=queries.device)
        sims, _, chunks = self.lookup(F.normalize(queries.detach().float(), dim=-1).cpu().numpy())
        return pull_from(sims, torch.as_tensor(chunks), self.temperature, self.weight).to(queries.device)

    def apply(self, adapted: torch.Tensor, base_queries: torch.Tensor) -> torch.Tensor:
        return apply_memories(adapted, base_queries, [self])

    # ------------------------------------------------------------------ following the index

    def chunk_hashes(self) -> Dict[str, str]:
        """``{chunk id: text hash}`` of every chunk held."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"SELECT DISTINCT chunk_id, chunk_hash FROM {self.name}")
            return dict(cur.fetchall())

    def add_chunks(self, chunk_ids: Sequence[str], chunk_vectors: np.ndarray, key_vectors: np.ndarray, key_chunk: np.ndarray,
                   text_hashes: Optional[Sequence[str]] = None) -> None:
        """Add chunks with their keys in one transaction; a chunk already held is replaced."""
        chunk_vectors, key_vectors, key_chunk = _checked(chunk_ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim)
        hashes = list(text_hashes) if text_hashes is not None else [""] * len(chunk_ids)
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.name} WHERE chunk_id = ANY(%s)", ([str(c) for c in chunk_ids],))
            _copy_rows(cur, self.name, _rows([str(c) for c in chunk_ids], chunk_vectors, key_vectors, key_chunk, hashes))

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop these chunks and their keys; returns how many chunks were held."""
        ids = [str(c) for c in chunk_ids]
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.name} WHERE chunk_id = ANY(%s) RETURNING chunk_id", (ids,))
            return len({r[0] for r in cur.fetchall()})

    def update(self, corpus: Mapping[str, str], embed_model: BaseEmbedding, doc_vectors: Optional[np.ndarray] = None,
               cache: Any = None, show_progress: bool = False, index_model: Optional[BaseEmbedding] = None) -> Dict[str, int]:
        """Follow ``corpus`` as ``CorpusMemory.update`` does; the changes land in one transaction."""
        held = self.chunk_hashes()
        ids = list(corpus)
        hashes = {c: _text_hash(corpus[c]) for c in ids}
        todo = [c for c in ids if held.get(c) != hashes[c]]
        gone = [c for c in held if c not in corpus]
        counts = {"added": sum(c not in held for c in todo), "changed": sum(c in held for c in todo), "removed": len(gone),
                  "unchanged": len(ids) - len(todo)}
        if not todo and not gone:
            return counts
        position = {c: i for i, c in enumerate(ids)}
        if doc_vectors is not None:
            docs = np.asarray(doc_vectors, dtype=np.float32)[[position[c] for c in todo]]
        else:
            docs = embed_texts(index_model or embed_model, [corpus[c] for c in todo], "text", cache=cache, show_progress=show_progress)
        sentences = [chunk_sentences(corpus[c]) for c in todo]
        flat = [x for found in sentences for x in found]
        keys = embed_texts(embed_model, flat, "query", cache=cache, show_progress=show_progress) if flat else np.zeros((0, self.key_dim), np.float32)
        key_chunk = np.repeat(np.arange(len(todo)), [len(found) for found in sentences])
        chunk_vectors, key_vectors, key_chunk = _checked(todo, docs, keys, key_chunk, self.dim, self.key_dim)
        with self._conn, self._conn.cursor() as cur:  # one transaction: removals and additions together
            cur.execute(f"DELETE FROM {self.name} WHERE chunk_id = ANY(%s)", (gone + todo,))
            _copy_rows(cur, self.name, _rows(todo, chunk_vectors, key_vectors, key_chunk, [hashes[c] for c in todo]))
        return counts

    def get_config_dict(self) -> Dict[str, Any]:
        return {"kind": "pgvector", "name": self.name, "dim": self.dim, "key_dim": self.key_dim, "weight": self.weight,
                "temperature": self.temperature, "top_k": self.top_k, "index": self.index, "ef_search": self.ef_search, "probes": self.probes}

    def close(self) -> None:
        self._conn.close()


def memory_names(url: str) -> List[str]:
    """The finished memories on a server."""
    conn = _connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (META_TABLE,))
            if cur.fetchone()[0] is None:
                return []
            cur.execute(f"SELECT name FROM {META_TABLE} WHERE ready ORDER BY name")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
