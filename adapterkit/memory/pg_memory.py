"""``PgMemory``: a corpus memory kept as tables in the user's PostgreSQL + pgvector, looked up by its ANN index.

A ``CorpusMemory`` holds its keys in local ``.npy`` files: fine up to a few million keys on one
machine. At tens of millions the keys belong in the database the index already lives in. ``PgMemory``
is the same memory (keys pull a query toward their chunks' frozen vectors; see ``corpus_memory``) as
two tables that hold each vector once::

    name          chunk_id text PRIMARY KEY, chunk_hash text, chunk halfvec(dim)   -- a row per chunk
    name__keys    chunk_id text, key halfvec(key_dim)                              -- a row per key, naming its chunk

with an ANN index (cosine) on ``key``: HNSW (the default), or IVFFlat, which builds far faster on
millions of keys and whose probes are chosen at build time for a recall target. Vectors are half
precision (pgvector's ``halfvec``, from 0.7) unless the server lacks it or ``half=False``. A query's
``top_k`` keys and their chunks' vectors come back in one round trip for a whole batch of queries (a
``LATERAL`` join over the batch), and the pull is computed here exactly as ``CorpusMemory.pull`` does.
A chunk without a 6+ word sentence has no key row: held, so that ``update`` knows it, never found.

Writes are transactions: ``add_chunks``, ``remove`` and ``update`` either happen whole or not at all.
A memory is built by ``PgMemoryWriter`` into staging tables and becomes visible only when
``finish()`` renames them in one transaction and marks the memory ready in ``adapterkit_memories``; a
build that died (the server went away, the process was killed) leaves staging tables that are never
read, and a new writer with ``resume=True`` continues it, skipping the chunks already written.

Example::

    with PgMemoryWriter(store.connection_string, "uber_sentences", dim=384) as writer:
        for ids, chunk_vecs, key_vecs, key_chunk, text_hashes in batches:
            writer.add(ids, chunk_vecs, key_vecs, key_chunk, text_hashes)  # hashes: what update() compares
    memory = PgMemory(store.connection_string, "uber_sentences")
    model = AdapterEmbeddingModel(base, "model_output", memory=[memory])
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from adapterkit.errors import AdapterkitError
from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.memory.database_memory import DatabaseMemory
from adapterkit.memory.pg_rows import write_chunks
from adapterkit.memory.pg_tables import (
    META_TABLE,
    choose_probes,
    column_types,
    create_tables,
    has_halfvec,
    keys_table,
    nearest,
    not_a_memory,
    regclass,
    sql_of,
    vector_literals,
    vector_type,
)
from adapterkit.memory.rows import check_max_keys, checked_rows
from adapterkit.metrics import unit_rows

LAYOUT = 2  # a row per chunk and a row per key; layout 1 copied the chunk's vector into every key row
# PostgreSQL names stop at 63 bytes: the staging suffix and "__keys" add 16, an index name 15; "__" is the tables' own separator
_NAME = re.compile(r"(?!.*__)[a-z_][a-z0-9_]{0,39}")
LOOKUP_BATCH = 256  # queries per round trip: bounds the rows fetched at once
RECALL = 0.95  # an IVFFlat memory's default recall@top_k target, against exact search


class PgMemoryError(AdapterkitError, ValueError):
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


def _failed(name: str, exc: Exception) -> PgMemoryError:
    """The error for a failed write: the server gone (resume later), or the data refused (fix it)."""
    import psycopg2

    said = (
        f"Writing memory {name!r} failed ({type(exc).__name__}: {str(exc).strip()}); "
        "that batch was rolled back and nothing unfinished is ever read."
    )
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return PgMemoryError(f"{said} Continue with PgMemoryWriter(..., resume=True) once the server is back.")
    return PgMemoryError(f"{said} The server refused the rows: fix them and write the batch again.")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"A memory name is 1-40 lower-case letters, digits or _ (starting with a letter or _, never two _ in a row), got {name!r}."
        )
    return name


class PgMemoryWriter:
    """Build a ``PgMemory`` batch by batch into staging tables; ``finish()`` (or leaving the ``with``
    block without an error) indexes it and makes it the memory ``name`` in one transaction.

    Args:
        url: the server (a SQLAlchemy URL, e.g. ``PGVectorStore.connection_string``).
        name: the memory's table name (lower-case letters, digits, _); never an existing table that is not a memory.
        dim: the chunk vectors' dimension.
        key_dim: the keys' dimension (default ``dim``; another when queries come from another model).
        resume: continue the staging tables an earlier writer left; else start afresh.
        index: the keys' ANN index, ``"hnsw"`` or ``"ivfflat"``.
        lists: IVFFlat lists (default: the square root of the key count); only with ``index="ivfflat"``.
        recall: the recall@top_k against exact search the IVFFlat probes are chosen for at ``finish()``
            (default 0.95; measured on keys sampled from the memory); only with ``index="ivfflat"``.
        half: half-precision vectors (``halfvec``: half the disk; pgvector 0.7 and later). Default: when the server has them.
        key_model, chunk_model: identities (``model_identity``) of the models behind the keys and the
            chunk vectors; recorded, so that ``PgMemory.update`` refuses other models.
        options: weight, temperature, top_k, max_keys (as ``CorpusMemory``; ``add`` refuses a chunk
            with more than ``max_keys`` keys, and ``PgMemory.update`` keeps to it).

    A chunk already in the staging tables (written before a resume, or twice) is skipped by ``add``.
    """

    def __init__(
        self,
        url: str,
        name: str,
        dim: int,
        key_dim: Optional[int] = None,
        resume: bool = False,
        index: str = "hnsw",
        lists: Optional[int] = None,
        recall: Optional[float] = None,
        half: Optional[bool] = None,
        key_model: Optional[str] = None,
        chunk_model: Optional[str] = None,
        **options: Any,
    ) -> None:
        if index not in ("hnsw", "ivfflat"):
            raise ValueError(f"index must be 'hnsw' or 'ivfflat', got {index!r}.")
        if lists is not None and (index != "ivfflat" or isinstance(lists, bool) or not isinstance(lists, int) or lists < 1):
            raise ValueError(f"lists sizes an IVFFlat index: an int >= 1 with index='ivfflat' (got lists={lists!r}, index={index!r}).")
        number = isinstance(recall, (int, float)) and not isinstance(recall, bool)
        if recall is not None and (index != "ivfflat" or not number or not 0 < recall <= 1):
            raise ValueError(
                f"recall is the target an IVFFlat index's probes are chosen for: a number in (0, 1] with index='ivfflat' "
                f"(got recall={recall!r}, index={index!r})."
            )
        if half not in (None, True, False):
            raise ValueError(f"half is True, False or None (when the server has halfvec), got {half!r}.")
        unknown = set(options) - {"weight", "temperature", "top_k", "max_keys"}
        if unknown:
            raise ValueError(f"Unknown PgMemory options {sorted(unknown)}: use weight, temperature, top_k, max_keys.")
        checked = CorpusMemory(dim, key_dim=key_dim, **options)  # the same checks of dim, weight, temperature and top_k
        self.url, self.name, self.dim, self.key_dim = url, check_name(name), checked.dim, checked.key_dim
        self.index, self.lists = index, lists
        self.recall = float(recall) if recall is not None else (RECALL if index == "ivfflat" else None)
        self.options: Dict[str, Any] = {
            "weight": checked.weight,
            "temperature": checked.temperature,
            "top_k": checked.top_k,
            "max_keys": checked.max_keys,
            "key_model": key_model,
            "chunk_model": chunk_model,
        }
        self.staging = f"{name}__building"
        self._finished = False
        self._conn = _connect(url)
        try:
            with self._conn, self._conn.cursor() as cur:
                if not_a_memory(cur, name):
                    raise PgMemoryError(
                        f"A table {name!r} or {keys_table(name)!r} exists on this server and is not an adapterkit memory's: "
                        "choose another name."
                    )
                has_half = has_halfvec(cur)
                if half and not has_half:
                    raise PgMemoryError("This server's pgvector has no halfvec (it came in 0.7): update the extension, or pass half=False.")
                self.half = has_half if half is None else bool(half)
                if not resume:
                    cur.execute(sql_of("DROP TABLE IF EXISTS {}, {}", self.staging, keys_table(self.staging)), ())
                held = column_types(cur, self.staging)
                want = {"chunk": vector_type(self.half, self.dim), "key": vector_type(self.half, self.key_dim)}
                if held and held != want:
                    raise PgMemoryError(f"The unfinished build of {name!r} holds {held}, not {want}: start afresh with resume=False.")
                create_tables(cur, self.staging, self.dim, self.key_dim, self.half)
                options = {"dim": self.dim, "key_dim": self.key_dim, **self.options}
                if held:  # a resumed build keeps the options it was started with, or mixes two kinds of rows
                    cur.execute(sql_of("SELECT config FROM {} WHERE name = %s", META_TABLE), (self.staging,))
                    row = cur.fetchone()
                    before = json.loads(row[0]) if row else {}
                    differ = sorted(k for k in options if before.get(k) != options[k])
                    if differ:
                        raise PgMemoryError(
                            f"The unfinished build of {name!r} was started with other {differ} "
                            f"({ {k: before.get(k) for k in differ} }): start afresh with resume=False, or resume with those."
                        )
                cur.execute(
                    sql_of(
                        "INSERT INTO {} (name, config, ready) VALUES (%s, %s, false) ON CONFLICT (name) DO UPDATE "
                        "SET config = EXCLUDED.config, ready = false",
                        META_TABLE,
                    ),
                    (self.staging, json.dumps(options)),
                )
        except BaseException:
            self._conn.close()
            raise

    def add(
        self,
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        text_hashes: Optional[Sequence[str]] = None,
    ) -> int:
        """Append chunks and their keys in one transaction; returns the keys written (chunks already held are skipped).

        ``text_hashes``: a hash of each chunk's text (``update`` re-embeds a chunk whose hash differs;
        without them, the first ``update`` re-embeds every chunk)."""
        import psycopg2

        chunk_vectors, key_vectors, key_chunk = checked_rows(
            chunk_ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim, self.options["max_keys"]
        )
        hashes = list(text_hashes) if text_hashes is not None else [""] * len(chunk_ids)
        ids = [str(c) for c in chunk_ids]
        try:
            with self._conn, self._conn.cursor() as cur:
                cur.execute(sql_of("SELECT chunk_id FROM {} WHERE chunk_id = ANY(%s)", self.staging), (ids,))
                held = {r[0] for r in cur.fetchall()}
                new = np.array([c not in held for c in ids], dtype=bool)
                if not new.any():
                    return 0
                keep = new[key_chunk] if len(key_chunk) else np.zeros(0, dtype=bool)
                renumber = np.cumsum(new) - 1
                return write_chunks(
                    cur,
                    (self.staging, keys_table(self.staging)),
                    [c for c, n in zip(ids, new) if n],
                    chunk_vectors[new],
                    key_vectors[keep],
                    renumber[key_chunk[keep]],
                    [h for h, n in zip(hashes, new) if n],
                    self.half,
                )
        except psycopg2.Error as exc:
            raise _failed(self.name, exc) from exc

    def finish(self) -> "PgMemory":
        """Index the keys and make the staging tables the memory ``name`` (replacing an older one) in one transaction."""
        if self._finished:
            return PgMemory(self.url, self.name)
        config = {"layout": LAYOUT, "dim": self.dim, "key_dim": self.key_dim, "index": self.index, "half": self.half, **self.options}
        staging, table = self.staging, self.name
        ops = "halfvec_cosine_ops" if self.half else "vector_cosine_ops"
        try:
            with self._conn, self._conn.cursor() as cur:
                if not_a_memory(cur, self.name):  # made since this writer opened
                    raise PgMemoryError(
                        f"A table {self.name!r} or {keys_table(self.name)!r} exists on this server and is not an adapterkit memory's: "
                        "choose another name."
                    )
                cur.execute("SET LOCAL maintenance_work_mem = '1GB'")  # an index built in memory builds many times faster
                if self.index == "ivfflat":
                    cur.execute(sql_of("SELECT count(*) FROM {}", keys_table(staging)), ())
                    lists = self.lists or max(1, int(cur.fetchone()[0] ** 0.5))
                    build = f"CREATE INDEX {{}} ON {{}} USING ivfflat (key {ops}) WITH (lists = %s)"
                    cur.execute(sql_of(build, staging + "__ann", keys_table(staging)), (int(lists),))
                    target = float(self.recall or RECALL)
                    probes, measured = choose_probes(cur, staging, self.half, int(lists), int(self.options["top_k"]), target)
                    config.update(lists=int(lists), recall=self.recall, probes=probes, measured_recall=round(measured, 4))
                else:
                    cur.execute(sql_of(f"CREATE INDEX {{}} ON {{}} USING hnsw (key {ops})", staging + "__ann", keys_table(staging)), ())
                cur.execute(sql_of("DROP TABLE IF EXISTS {}, {}", table, keys_table(table)), ())
                for old, new in ((staging, table), (keys_table(staging), keys_table(table))):
                    cur.execute(sql_of("ALTER TABLE {} RENAME TO {}", old, new), ())
                for suffix in ("__pk", "__kc", "__ann"):
                    cur.execute(sql_of("ALTER INDEX {} RENAME TO {}", staging + suffix, table + suffix), ())
                cur.execute(
                    sql_of(
                        "INSERT INTO {} (name, config, ready) VALUES (%s, %s, true) "
                        "ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, ready = true",
                        META_TABLE,
                    ),
                    (self.name, json.dumps(config)),
                )
                cur.execute(sql_of("DELETE FROM {} WHERE name = %s", META_TABLE), (self.staging,))
            self._finished = True
        finally:
            self._conn.close()
        return PgMemory(self.url, self.name)

    def __enter__(self) -> "PgMemoryWriter":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.finish()
        else:
            self._conn.close()  # the staging tables stay, unread, for resume=True


class PgMemory(DatabaseMemory):
    """A finished memory, read by its ANN index (see the module's docstring).

    Args:
        url: the server (a SQLAlchemy URL).
        name: the memory's table, as written by ``PgMemoryWriter``.
        ef_search: HNSW candidates per lookup (pgvector's ``hnsw.ef_search``; default 100, at least
            ``top_k``); only for an HNSW memory.
        probes: IVFFlat lists scanned per lookup (``ivfflat.probes``); default the probes chosen at build
            time for the writer's ``recall``; only for an IVFFlat memory.
    """

    def __init__(self, url: str, name: str, ef_search: Optional[int] = None, probes: Optional[int] = None) -> None:
        self.url, self.name = url, check_name(name)
        self._conn = _connect(url)
        with self._conn, self._conn.cursor() as cur:
            record = None
            if regclass(cur, META_TABLE) is not None:
                cur.execute(sql_of("SELECT config, ready FROM {} WHERE name = %s", META_TABLE), (name,))
                record = cur.fetchone()
        if record is None or not record[1]:
            raise PgMemoryError(
                f"No finished memory {name!r} on this server (an unfinished build is never read): build it "
                "with PgMemoryWriter, or continue a build with PgMemoryWriter(..., resume=True)."
            )
        try:
            config = json.loads(record[0])
            if config.get("layout") != LAYOUT:
                raise PgMemoryError(
                    f"Memory {name!r} was built by an earlier adapterkit, whose table copies each chunk's vector into every key "
                    "row: build it again with PgMemoryWriter (memory_from_store reads it back from the store)."
                )
            self.dim, self.key_dim = int(config["dim"]), int(config["key_dim"])
            self.weight, self.temperature, self.top_k = float(config["weight"]), float(config["temperature"]), int(config["top_k"])
            self.index, self.half = config["index"], bool(config["half"])
            chosen = int(config["probes"]) if self.index == "ivfflat" else 1
            self.lists, self.measured_recall = config.get("lists"), config.get("measured_recall")  # IVFFlat: the build's choice
            self.max_keys = check_max_keys(config.get("max_keys"))
            self.key_model, self.chunk_model = config.get("key_model"), config.get("chunk_model")
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, PgMemoryError):
                raise
            raise PgMemoryError(f"The record of memory {name!r} in {META_TABLE} is damaged ({exc}): build the memory again.") from exc
        if (ef_search is not None and self.index != "hnsw") or (probes is not None and self.index != "ivfflat"):
            raise ValueError(f"Memory {name!r} has an {self.index} index: ef_search is for HNSW, probes for IVFFlat.")
        self.ef_search = max(int(ef_search or 100), self.top_k)
        self.probes = int(probes) if probes is not None else chosen

    def __len__(self) -> int:
        return int(self._read(("SELECT 1", ()), sql_of("SELECT count(*) FROM {}", self.name), ())[0][0])

    def key_count(self) -> int:
        return int(self._read(("SELECT 1", ()), sql_of("SELECT count(*) FROM {}", keys_table(self.name)), ())[0][0])

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "PgMemory":
        """The same tables with another pull (a new connection); this one is left as it is."""
        other = copy.copy(self)
        other._conn = _connect(self.url)
        other.weight = float(weight)
        other.temperature = float(self.temperature if temperature is None else temperature)
        return other

    # ------------------------------------------------------------------ query time

    def lookup(self, queries: np.ndarray) -> Tuple[np.ndarray, List[List[str]], np.ndarray]:
        """Each query's top keys: cosine ``(Q, k)`` (-inf where nothing was found), their chunk ids, and
        their chunk vectors ``(Q, k, dim)``; ``LOOKUP_BATCH`` queries per round trip."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.key_dim:
            raise ValueError(f"Memory {self.name!r} looks up {self.key_dim}-dimensional base query vectors, got shape {q.shape}.")
        q = unit_rows(q)
        k = self.top_k
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        chunks = np.zeros((len(q), k, self.dim), dtype=np.float32)
        ids: List[List[str]] = [[] for _ in range(len(q))]
        # many probes make a scan per query look cheaper to the planner than the index: it is many times slower
        search = (
            ("SET LOCAL enable_seqscan = off; SET LOCAL hnsw.ef_search = %s", (int(self.ef_search),))
            if self.index == "hnsw"
            else ("SET LOCAL enable_seqscan = off; SET LOCAL ivfflat.probes = %s", (int(self.probes),))
        )
        statement = nearest(self.name, self.half)
        for start in range(0, len(q), LOOKUP_BATCH):
            found = self._read(search, statement, (vector_literals(q[start : start + LOOKUP_BATCH]), int(k)))
            if found and len(found[0][3]) != self.dim:
                raise PgMemoryError(
                    f"Memory {self.name!r} now holds {len(found[0][3])}-dimensional chunk vectors, not the {self.dim} "
                    "it was built with: its table was changed; build the memory again with PgMemoryWriter."
                )
            for i, cos, chunk_id, chunk in sorted(found, key=lambda r: (r[0], -r[1] if r[1] == r[1] else np.inf, r[2])):
                row = start + int(i) - 1
                place = len(ids[row])
                sims[row, place] = cos if cos == cos else -np.inf  # NaN (a zero vector): not a match
                chunks[row, place] = chunk
                ids[row].append(chunk_id)
        return sims, ids, chunks

    def _read(self, setting: Tuple[str, tuple], query: Any, params: tuple) -> List[tuple]:
        """One read-only round trip. A lost connection is opened again once (a read can be repeated);
        a table changed since it was built is an error that says to rebuild it."""
        import psycopg2

        def round_trip() -> List[tuple]:
            with self._conn, self._conn.cursor() as cur:
                cur.execute(*setting)
                cur.execute(query, params)
                return cur.fetchall()

        try:
            try:
                return round_trip()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._conn.close()
                self._conn = _connect(self.url)
                return round_trip()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise PgMemoryError(
                f"Looking up memory {self.name!r} failed: the server is not reachable ({str(exc).strip()}). "
                "Nothing was changed; look up again once it is back."
            ) from exc
        except psycopg2.Error as exc:
            raise PgMemoryError(
                f"Looking up memory {self.name!r} failed ({type(exc).__name__}: {str(exc).strip()}): its table was "
                "changed or dropped since it was built; build the memory again with PgMemoryWriter."
            ) from exc

    # ------------------------------------------------------------------ following the index

    def chunk_hashes(self) -> Dict[str, str]:
        """``{chunk id: text hash}`` of every chunk held."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(sql_of("SELECT chunk_id, chunk_hash FROM {}", self.name), ())
            return dict(cur.fetchall())

    def _replace(
        self,
        drop: Sequence[str],
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        hashes: Sequence[str],
    ) -> None:
        """One transaction: delete the chunks of ``drop`` and their keys, then COPY the chunks given."""
        with self._conn, self._conn.cursor() as cur:
            self._delete(cur, drop)
            write_chunks(cur, (self.name, keys_table(self.name)), chunk_ids, chunk_vectors, key_vectors, key_chunk, hashes, self.half)

    def _delete(self, cur: Any, chunk_ids: Sequence[str]) -> int:
        cur.execute(sql_of("DELETE FROM {} WHERE chunk_id = ANY(%s)", keys_table(self.name)), (list(chunk_ids),))
        cur.execute(sql_of("DELETE FROM {} WHERE chunk_id = ANY(%s)", self.name), (list(chunk_ids),))
        return int(cur.rowcount)

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop these chunks and their keys; returns how many chunks were held."""
        with self._conn, self._conn.cursor() as cur:
            return self._delete(cur, [str(c) for c in chunk_ids])

    def get_config_dict(self) -> Dict[str, Any]:
        return {
            "kind": "pgvector",
            "name": self.name,
            "dim": self.dim,
            "key_dim": self.key_dim,
            "weight": self.weight,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "index": self.index,
            "half": self.half,
            "ef_search": self.ef_search,
            "probes": self.probes,
            "lists": self.lists,
            "measured_recall": self.measured_recall,
            "max_keys": self.max_keys,
            "key_model": self.key_model,
            "chunk_model": self.chunk_model,
        }

    def close(self) -> None:
        self._conn.close()


def memory_names(url: str) -> List[str]:
    """The finished memories on a server."""
    conn = _connect(url)
    try:
        with conn, conn.cursor() as cur:
            if regclass(cur, META_TABLE) is None:
                return []
            cur.execute(sql_of("SELECT name FROM {} WHERE ready ORDER BY name", META_TABLE), ())
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
