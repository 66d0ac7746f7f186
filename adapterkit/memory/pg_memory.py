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
        for ids, chunk_vecs, key_vecs, key_chunk, text_hashes in batches:
            writer.add(ids, chunk_vecs, key_vecs, key_chunk, text_hashes)  # hashes: what update() compares
    memory = PgMemory(store.connection_string, "uber_sentences")
    model = AdapterEmbeddingModel(base, "model_output", memory=[memory])
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from adapterkit.errors import AdapterkitError
from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.memory.database_memory import DatabaseMemory
from adapterkit.memory.pg_rows import check_pg_name, copy_rows, key_rows
from adapterkit.memory.rows import check_max_keys, checked_rows
from adapterkit.metrics import unit_rows

META_TABLE = "adapterkit_memories"  # name, config (JSON), ready: a memory is read only once ready
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")  # PostgreSQL names stop at 63 bytes; the staging table and indexes add 19
LOOKUP_BATCH = 256  # queries per round trip: bounds the rows fetched at once


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


def _q(name: str) -> Any:
    """``name`` quoted (``sql.Identifier``) for a statement run with parameters: a reserved word (``order``, ``user``) is a
    valid memory name too. psycopg2 %-formats such a statement as a whole, so a ``%`` in the name is doubled (else a
    ``%s`` there would take a value's place)."""
    from psycopg2 import sql

    check_pg_name(name, "A memory table or index name")  # libpq ends a name at a NUL: "victim\0x" would be "victim"
    return sql.Identifier(name.replace("%", "%%"))


def _sql(template: str, *names: str) -> Any:
    """``template`` with each ``{}`` the quoted name of ``names``: run it with parameters (``()`` when it has none)."""
    from psycopg2 import sql

    return sql.SQL(template).format(*(_q(n) for n in names))


def _quoted_value(cur: Any, name: str) -> str:
    """``name`` quoted, as a value for ``to_regclass(%s)``, which then takes it as written (not lower-cased)."""
    from psycopg2 import sql

    return sql.Identifier(check_pg_name(name, "A memory table name")).as_string(cur)


def _regclass(cur: Any, name: str) -> Any:
    """The table ``name`` if it exists, else None."""
    cur.execute("SELECT to_regclass(%s)", (_quoted_value(cur, name),))
    return cur.fetchone()[0]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"A memory name is 1-40 lower-case letters, digits or _ (starting with a letter or _), got {name!r}.")
    return name


def _create(cur: Any, table: str, dim: int, key_dim: int) -> None:
    cur.execute(
        _sql(
            "CREATE TABLE IF NOT EXISTS {} (row_id bigserial PRIMARY KEY, chunk_id text NOT NULL, "
            "chunk_hash text NOT NULL, key vector(%s), chunk vector(%s) NOT NULL)",
            table,
        ),
        (int(key_dim), int(dim)),
    )
    cur.execute(_sql("CREATE INDEX IF NOT EXISTS {} ON {} (chunk_id)", table + "_chunk_id", table), ())
    cur.execute(_sql("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, config text NOT NULL, ready boolean NOT NULL)", META_TABLE), ())


def _not_a_memory(cur: Any, name: str) -> bool:
    """Whether a table ``name`` exists that is not a memory (a build must never replace the user's own table)."""
    if _regclass(cur, name) is None:
        return False
    if _regclass(cur, META_TABLE) is None:
        return True
    cur.execute(_sql("SELECT 1 FROM {} WHERE name = %s", META_TABLE), (name,))
    return cur.fetchone() is None


def _column_types(cur: Any, table: str) -> Dict[str, str]:
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname IN ('key', 'chunk')",
        (_quoted_value(cur, table),),
    )
    return dict(cur.fetchall())


class PgMemoryWriter:
    """Build a ``PgMemory`` batch by batch into a staging table; ``finish()`` (or leaving the ``with``
    block without an error) indexes it and makes it the memory ``name`` in one transaction.

    Args:
        url: the server (a SQLAlchemy URL, e.g. ``PGVectorStore.connection_string``).
        name: the memory's table name (lower-case letters, digits, _); never an existing table that is not a memory.
        dim: the chunk vectors' dimension.
        key_dim: the keys' dimension (default ``dim``; another when queries come from another model).
        resume: continue a staging table an earlier writer left; else start afresh.
        index: the keys' ANN index, ``"hnsw"`` or ``"ivfflat"``.
        lists: IVFFlat lists (default: the square root of the key count); only with ``index="ivfflat"``.
        key_model, chunk_model: identities (``model_identity``) of the models behind the keys and the
            chunk vectors; recorded, so that ``PgMemory.update`` refuses other models.
        options: weight, temperature, top_k, max_keys (as ``CorpusMemory``; ``add`` refuses a chunk
            with more than ``max_keys`` keys, and ``PgMemory.update`` keeps to it).

    A chunk already in the staging table (written before a resume, or twice) is skipped by ``add``.
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
        key_model: Optional[str] = None,
        chunk_model: Optional[str] = None,
        **options: Any,
    ) -> None:
        if index not in ("hnsw", "ivfflat"):
            raise ValueError(f"index must be 'hnsw' or 'ivfflat', got {index!r}.")
        if lists is not None and (index != "ivfflat" or isinstance(lists, bool) or not isinstance(lists, int) or lists < 1):
            raise ValueError(f"lists sizes an IVFFlat index: an int >= 1 with index='ivfflat' (got lists={lists!r}, index={index!r}).")
        unknown = set(options) - {"weight", "temperature", "top_k", "max_keys"}
        if unknown:
            raise ValueError(f"Unknown PgMemory options {sorted(unknown)}: use weight, temperature, top_k, max_keys.")
        checked = CorpusMemory(dim, key_dim=key_dim, **options)  # the same checks of dim, weight, temperature and top_k
        self.url, self.name, self.dim, self.key_dim = url, check_name(name), checked.dim, checked.key_dim
        self.index, self.lists = index, lists
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
                if _not_a_memory(cur, name):
                    raise PgMemoryError(f"A table {name!r} exists on this server and is not an adapterkit memory: choose another name.")
                if not resume:
                    cur.execute(_sql("DROP TABLE IF EXISTS {}", self.staging), ())
                held = _column_types(cur, self.staging)
                want = {"key": f"vector({self.key_dim})", "chunk": f"vector({self.dim})"}
                if held and held != want:
                    raise PgMemoryError(f"The unfinished build of {name!r} holds {held}, not {want}: start afresh with resume=False.")
                _create(cur, self.staging, self.dim, self.key_dim)
                options = {"dim": self.dim, "key_dim": self.key_dim, **self.options}
                if held:  # a resumed build keeps the options it was started with, or mixes two kinds of rows
                    cur.execute(_sql("SELECT config FROM {} WHERE name = %s", META_TABLE), (self.staging,))
                    row = cur.fetchone()
                    before = json.loads(row[0]) if row else {}
                    differ = sorted(k for k in options if before.get(k) != options[k])
                    if differ:
                        raise PgMemoryError(
                            f"The unfinished build of {name!r} was started with other {differ} "
                            f"({ {k: before.get(k) for k in differ} }): start afresh with resume=False, or resume with those."
                        )
                cur.execute(
                    _sql(
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
        """Append chunks and their keys in one transaction; returns the rows written (chunks already held are skipped).

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
                cur.execute(_sql("SELECT DISTINCT chunk_id FROM {} WHERE chunk_id = ANY(%s)", self.staging), (ids,))
                held = {r[0] for r in cur.fetchall()}
                new = np.array([c not in held for c in ids], dtype=bool)
                if not new.any():
                    return 0
                keep = new[key_chunk] if len(key_chunk) else np.zeros(0, dtype=bool)
                renumber = np.cumsum(new) - 1
                return copy_rows(
                    cur,
                    self.staging,
                    key_rows(
                        [c for c, n in zip(ids, new) if n],
                        chunk_vectors[new],
                        key_vectors[keep],
                        renumber[key_chunk[keep]],
                        [h for h, n in zip(hashes, new) if n],
                    ),
                )
        except psycopg2.Error as exc:
            raise _failed(self.name, exc) from exc

    def finish(self) -> "PgMemory":
        """Index the keys and make the staging table the memory ``name`` (replacing an older one) in one transaction."""
        if self._finished:
            return PgMemory(self.url, self.name)
        config = {"dim": self.dim, "key_dim": self.key_dim, "index": self.index, **self.options}
        staging, table = self.staging, self.name
        try:
            with self._conn, self._conn.cursor() as cur:
                if _not_a_memory(cur, self.name):  # made since this writer opened
                    raise PgMemoryError(
                        f"A table {self.name!r} exists on this server and is not an adapterkit memory: choose another name."
                    )
                cur.execute("SET LOCAL maintenance_work_mem = '1GB'")  # an index built in memory builds many times faster
                if self.index == "ivfflat":
                    cur.execute(_sql("SELECT count(key) FROM {}", staging), ())
                    lists = self.lists or max(1, int(cur.fetchone()[0] ** 0.5))
                    cur.execute(
                        _sql("CREATE INDEX {} ON {} USING ivfflat (key vector_cosine_ops) WITH (lists = %s)", staging + "_key", staging),
                        (int(lists),),
                    )
                    config["lists"] = int(lists)
                else:
                    cur.execute(_sql("CREATE INDEX {} ON {} USING hnsw (key vector_cosine_ops)", staging + "_key", staging), ())
                cur.execute(_sql("DROP TABLE IF EXISTS {}", table), ())
                cur.execute(_sql("ALTER TABLE {} RENAME TO {}", staging, table), ())
                cur.execute(_sql("ALTER INDEX {} RENAME TO {}", staging + "_key", table + "_key"), ())
                cur.execute(_sql("ALTER INDEX {} RENAME TO {}", staging + "_chunk_id", table + "_chunk_id"), ())
                cur.execute(
                    _sql(
                        "INSERT INTO {} (name, config, ready) VALUES (%s, %s, true) "
                        "ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, ready = true",
                        META_TABLE,
                    ),
                    (self.name, json.dumps(config)),
                )
                cur.execute(_sql("DELETE FROM {} WHERE name = %s", META_TABLE), (self.staging,))
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
            self._conn.close()  # the staging table stays, unread, for resume=True


class PgMemory(DatabaseMemory):
    """A finished memory table, read by its ANN index (see the module's docstring).

    Args:
        url: the server (a SQLAlchemy URL).
        name: the memory's table, as written by ``PgMemoryWriter``.
        ef_search: HNSW candidates per lookup (pgvector's ``hnsw.ef_search``; default 100, at least
            ``top_k``); only for an HNSW memory.
        probes: IVFFlat lists scanned per lookup (``ivfflat.probes``); default the square root of the
            lists, pgvector's own advice (1M keys, 1,000 lists: 32 probes); only for an IVFFlat memory.
    """

    def __init__(self, url: str, name: str, ef_search: Optional[int] = None, probes: Optional[int] = None) -> None:
        self.url, self.name = url, check_name(name)
        self._conn = _connect(url)
        with self._conn, self._conn.cursor() as cur:
            record = None
            if _regclass(cur, META_TABLE) is not None:
                cur.execute(_sql("SELECT config, ready FROM {} WHERE name = %s", META_TABLE), (name,))
                record = cur.fetchone()
        if record is None or not record[1]:
            raise PgMemoryError(
                f"No finished memory {name!r} on this server (an unfinished build is never read): build it "
                "with PgMemoryWriter, or continue a build with PgMemoryWriter(..., resume=True)."
            )
        try:
            config = json.loads(record[0])
            self.dim, self.key_dim = int(config["dim"]), int(config["key_dim"])
            self.weight, self.temperature, self.top_k = float(config["weight"]), float(config["temperature"]), int(config["top_k"])
            self.index = config.get("index", "hnsw")
            lists = int(config.get("lists", 1))
            self.max_keys = check_max_keys(config.get("max_keys"))
            self.key_model, self.chunk_model = config.get("key_model"), config.get("chunk_model")
        except (ValueError, KeyError, TypeError) as exc:
            raise PgMemoryError(f"The record of memory {name!r} in {META_TABLE} is damaged ({exc}): build the memory again.") from exc
        if (ef_search is not None and self.index != "hnsw") or (probes is not None and self.index != "ivfflat"):
            raise ValueError(f"Memory {name!r} has an {self.index} index: ef_search is for HNSW, probes for IVFFlat.")
        self.ef_search = max(int(ef_search or 100), self.top_k)
        self.probes = int(probes) if probes is not None else max(1, math.ceil(math.sqrt(lists)))

    def __len__(self) -> int:
        return int(self._read(("SELECT 1", ()), _sql("SELECT count(DISTINCT chunk_id) FROM {}", self.name), ())[0][0])

    def key_count(self) -> int:
        return int(self._read(("SELECT 1", ()), _sql("SELECT count(key) FROM {}", self.name), ())[0][0])

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "PgMemory":
        """The same table with another pull (a new connection); this one is left as it is."""
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
        search = (
            ("SET LOCAL hnsw.ef_search = %s", (int(self.ef_search),))
            if self.index == "hnsw"
            else ("SET LOCAL ivfflat.probes = %s", (int(self.probes),))
        )
        nearest = _sql(
            "SELECT q.i, m.cos, m.chunk_id, m.chunk::real[] FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, i) "
            "CROSS JOIN LATERAL (SELECT 1 - (key <=> q.v::vector) AS cos, chunk_id, chunk FROM {} "
            "WHERE key IS NOT NULL ORDER BY key <=> q.v::vector LIMIT %s) AS m",
            self.name,
        )
        for start in range(0, len(q), LOOKUP_BATCH):
            texts = ["[" + ",".join(f"{x:.9g}" for x in row) + "]" for row in q[start : start + LOOKUP_BATCH]]
            found = self._read(search, nearest, (texts, int(k)))
            if found and len(found[0][3]) != self.dim:
                raise PgMemoryError(
                    f"Memory {self.name!r} now holds {len(found[0][3])}-dimensional chunk vectors, not the {self.dim} "
                    "it was built with: its table was changed; build the memory again with PgMemoryWriter."
                )
            for i, cos, chunk_id, chunk in found:
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
            cur.execute(_sql("SELECT DISTINCT chunk_id, chunk_hash FROM {}", self.name), ())
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
        """One transaction: delete the rows of ``drop``, then COPY the chunks given."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(_sql("DELETE FROM {} WHERE chunk_id = ANY(%s)", self.name), (list(drop),))
            copy_rows(cur, self.name, key_rows(list(chunk_ids), chunk_vectors, key_vectors, key_chunk, list(hashes)))

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop these chunks and their keys; returns how many chunks were held."""
        ids = [str(c) for c in chunk_ids]
        with self._conn, self._conn.cursor() as cur:
            cur.execute(_sql("DELETE FROM {} WHERE chunk_id = ANY(%s) RETURNING chunk_id", self.name), (ids,))
            return len({r[0] for r in cur.fetchall()})

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
            "ef_search": self.ef_search,
            "probes": self.probes,
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
            if _regclass(cur, META_TABLE) is None:
                return []
            cur.execute(_sql("SELECT name FROM {} WHERE ready ORDER BY name", META_TABLE), ())
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
