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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.memory.database_memory import DatabaseMemory
from adapterkit.memory.pg_rows import check_pg_name, write_chunks
from adapterkit.memory.pg_tables import (
    INDEX_SUFFIXES,
    META_TABLE,
    PgMemoryError,
    check_name,
    choose_probes,
    column_types,
    connect,
    create_tables,
    failed_write,
    foreign_names,
    has_type,
    keys_table,
    nearest,
    not_ours,
    regclass,
    sql_of,
    staging_table,
    vector_literals,
    vector_type,
)
from adapterkit.memory.rows import check_max_keys, checked_hashes, checked_rows
from adapterkit.metrics import unit_rows

LAYOUT = 2  # a row per chunk and a row per key; layout 1 copied the chunk's vector into every key row
LOOKUP_BATCH = 256  # queries per round trip: bounds the rows fetched at once
RECALL = 0.95  # an IVFFlat memory's default recall@top_k target, against exact search
MAX_LISTS = 32768  # pgvector's IVFFlat limits: lists (and so probes), and the dimensions an index holds
MAX_INDEXED, MAX_INDEXED_HALF = 2000, 4000  # vector, halfvec
MAX_EF_SEARCH = 1000  # pgvector's largest hnsw.ef_search: an HNSW lookup finds at most this many keys


T = TypeVar("T")


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
        if lists is not None and (
            index != "ivfflat" or isinstance(lists, bool) or not isinstance(lists, int) or not 1 <= lists <= MAX_LISTS
        ):
            raise ValueError(
                f"lists sizes an IVFFlat index: an int from 1 to {MAX_LISTS} with index='ivfflat' (got lists={lists!r}, index={index!r})."
            )
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
        if index == "hnsw" and checked.top_k > MAX_EF_SEARCH:
            raise ValueError(f"An HNSW memory finds at most {MAX_EF_SEARCH} keys per query (pgvector's ef_search): top_k={checked.top_k}.")
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
        import psycopg2

        self.staging = staging_table(name)
        check_pg_name(keys_table(self.staging), "A memory table name")  # the longest name a build uses
        self._finished = False
        self._conn = connect(url)
        try:
            with self._conn, self._conn.cursor() as cur:
                self.half = self._open(cur, half, resume)
        except psycopg2.Error as exc:
            self._conn.close()
            raise failed_write(self.name, exc) from exc
        except BaseException:
            self._conn.close()
            raise

    def _open(self, cur: Any, half: Optional[bool], resume: bool) -> bool:
        """Claim the name, check the server and any unfinished build, and create the staging tables; returns ``half``."""
        if not has_type(cur, "vector"):
            raise PgMemoryError(
                "This database has no pgvector: run CREATE EXTENSION vector in it (pgvector must be installed on the server)."
            )
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"adapterkit memory {self.name}",))  # held until closed
        if not cur.fetchone()[0]:
            raise PgMemoryError(f"Another writer is building memory {self.name!r} on this server: let it finish, or stop it first.")
        foreign = foreign_names(cur, self.name)
        if foreign:
            raise not_ours(self.name, foreign)
        has_half = has_type(cur, "halfvec")  # pgvector 0.7 and later
        if half and not has_half:
            raise PgMemoryError("This server's pgvector has no halfvec (it came in 0.7): update the extension, or pass half=False.")
        half = has_half if half is None else bool(half)
        if self.key_dim > (MAX_INDEXED_HALF if half else MAX_INDEXED):
            raise ValueError(
                f"pgvector indexes at most {MAX_INDEXED} dimensions of vector and {MAX_INDEXED_HALF} of halfvec: the keys have "
                f"{self.key_dim}{' (pass half=True)' if not half and self.key_dim <= MAX_INDEXED_HALF else ''}."
            )
        if not resume:
            cur.execute(sql_of("DROP TABLE IF EXISTS {}, {}", self.staging, keys_table(self.staging)), ())
        held = column_types(cur, self.staging)
        want = {"chunk": vector_type(half, self.dim), "key": vector_type(half, self.key_dim)}
        if held and held != want:
            raise PgMemoryError(f"The unfinished build of {self.name!r} holds {held}, not {want}: start afresh with resume=False.")
        create_tables(cur, self.staging, self.dim, self.key_dim, half)
        options = {"dim": self.dim, "key_dim": self.key_dim, **self.options}
        if held:  # a resumed build keeps the options it was started with, or mixes two kinds of rows
            cur.execute(sql_of("SELECT config FROM {} WHERE name = %s", META_TABLE), (self.staging,))
            row = cur.fetchone()
            try:
                before = json.loads(row[0]) if row else {}
                differ = sorted(k for k in options if before.get(k) != options[k])
            except (ValueError, AttributeError):
                before, differ = {}, ["the record"]
            if differ:
                raise PgMemoryError(
                    f"The unfinished build of {self.name!r} was started with other {differ} "
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
        return half

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

        if self._finished:
            raise PgMemoryError(f"This writer has finished memory {self.name!r}: follow the index with PgMemory(...).add_chunks or update.")
        chunk_vectors, key_vectors, key_chunk = checked_rows(
            chunk_ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim, self.options["max_keys"]
        )
        hashes = checked_hashes(chunk_ids, text_hashes)
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
            raise failed_write(self.name, exc) from exc

    def finish(self) -> "PgMemory":
        """Index the keys and make the staging tables the memory ``name`` (replacing an older one) in one transaction."""
        import psycopg2

        if self._finished:
            return PgMemory(self.url, self.name)
        config = {"layout": LAYOUT, "dim": self.dim, "key_dim": self.key_dim, "index": self.index, "half": self.half, **self.options}
        staging, table = self.staging, self.name
        ops = "halfvec_cosine_ops" if self.half else "vector_cosine_ops"
        try:
            with self._conn, self._conn.cursor() as cur:
                foreign = foreign_names(cur, self.name)  # made since this writer opened
                if foreign:
                    raise not_ours(self.name, foreign)
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
                for suffix in INDEX_SUFFIXES:
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
        except psycopg2.Error as exc:
            raise failed_write(self.name, exc) from exc
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
        self._conn = connect(url)
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
        self._use_record(record[0])
        index_option = {"hnsw": ("ef_search", ef_search, MAX_EF_SEARCH), "ivfflat": ("probes", probes, MAX_LISTS)}
        for option, value, most in index_option.values():
            if value is not None and (option != index_option[self.index][0]):
                raise ValueError(f"Memory {name!r} has an {self.index} index: ef_search is for HNSW, probes for IVFFlat.")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most):
                raise ValueError(f"{option} is an int from 1 to {most} (pgvector's range), got {value!r}.")
        self.ef_search = max(ef_search or 100, self.top_k)
        self.probes = probes if probes is not None else self._chosen_probes

    def _use_record(self, raw: str) -> None:
        """Take the memory's options from its record in ``META_TABLE``; a record that is not one a writer makes is an error."""
        name = self.name
        try:
            config = json.loads(raw)
            if not isinstance(config, dict):
                raise TypeError(f"a {type(config).__name__}, not an object")
            layout = config.get("layout")
            if layout != LAYOUT:
                later = isinstance(layout, int) and not isinstance(layout, bool) and layout > LAYOUT
                raise PgMemoryError(
                    f"Memory {name!r} was built by a later adapterkit (layout {layout}): upgrade adapterkit to read it."
                    if later
                    else f"Memory {name!r} was built by an earlier adapterkit, whose table copies each chunk's vector into "
                    "every key row: build it again with PgMemoryWriter (memory_from_store reads it back from the store)."
                )
            options = {k: config[k] for k in ("weight", "temperature", "top_k", "max_keys") if k in config}
            held = CorpusMemory(config["dim"], key_dim=config["key_dim"], **options)  # the writer's checks of each value
            self.dim, self.key_dim, self.weight, self.temperature = held.dim, held.key_dim, held.weight, held.temperature
            self.top_k, self.max_keys = held.top_k, check_max_keys(config.get("max_keys"))
            self.index, self.half = config["index"], config["half"]
            if self.index not in ("hnsw", "ivfflat") or not isinstance(self.half, bool):
                raise ValueError(f"index {self.index!r}, half {self.half!r}")
            self.lists, self.measured_recall = config.get("lists"), config.get("measured_recall")  # IVFFlat: the build's choice
            probes = config.get("probes") if self.index == "ivfflat" else 1
            if isinstance(probes, bool) or not isinstance(probes, int) or not 1 <= probes <= MAX_LISTS:
                raise ValueError(f"probes {probes!r}")
            self._chosen_probes = probes
            self.key_model, self.chunk_model = config.get("key_model"), config.get("chunk_model")
        except PgMemoryError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise PgMemoryError(f"The record of memory {name!r} in {META_TABLE} is damaged ({exc}): build the memory again.") from exc

    def __len__(self) -> int:
        return int(self._read(sql_of("SELECT count(*) FROM {}", self.name), ())[0][0])

    def key_count(self) -> int:
        return int(self._read(sql_of("SELECT count(*) FROM {}", keys_table(self.name)), ())[0][0])

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "PgMemory":
        """The same tables with another pull (a new connection); this one is left as it is."""
        other = copy.copy(self)
        other._conn = connect(self.url)
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
        if not np.isfinite(q).all():
            raise ValueError("Query vectors must be finite (a NaN or inf came from the base model or the adapter).")
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
            found = self._read(statement, (vector_literals(q[start : start + LOOKUP_BATCH]), int(k)), search)
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

    def _read(self, query: Any, params: tuple, setting: Optional[Tuple[str, tuple]] = None) -> List[tuple]:
        """One read-only round trip (see ``_round_trip``), after ``setting`` (``SET LOCAL`` statements and their values)."""

        def read(cur: Any) -> List[tuple]:
            if setting is not None:
                cur.execute(*setting)
            cur.execute(query, params)
            return cur.fetchall()

        return self._round_trip(read, "Looking up")

    def _round_trip(self, work: Callable[[Any], T], doing: str) -> T:
        """``work(cursor)`` in one transaction. A lost connection is opened again once and the work repeated: a read, or a
        write that replaces or deletes whole chunks, leaves the same as one run. A table changed since this object was
        opened is an error that says what to do."""
        import psycopg2

        def once() -> T:
            with self._conn, self._conn.cursor() as cur:
                return work(cur)

        try:
            try:
                return once()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._conn.close()
                self._conn = connect(self.url)
                return once()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise PgMemoryError(
                f"{doing} memory {self.name!r} failed: the server is not reachable ({str(exc).strip()}). "
                "Nothing was changed; try again once it is back."
            ) from exc
        except psycopg2.Error as exc:
            raise PgMemoryError(
                f"{doing} memory {self.name!r} failed ({type(exc).__name__}: {str(exc).strip()}); nothing was changed. Its tables "
                "were changed, dropped or rebuilt since this PgMemory was opened: open it again, or build the memory again "
                "with PgMemoryWriter."
            ) from exc

    # ------------------------------------------------------------------ following the index

    def chunk_hashes(self) -> Dict[str, str]:
        """``{chunk id: text hash}`` of every chunk held."""
        return dict(self._read(sql_of("SELECT chunk_id, chunk_hash FROM {}", self.name), ()))

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

        def replace(cur: Any) -> None:
            self._delete(cur, drop)
            write_chunks(cur, (self.name, keys_table(self.name)), chunk_ids, chunk_vectors, key_vectors, key_chunk, hashes, self.half)

        self._round_trip(replace, "Writing")

    def _delete(self, cur: Any, chunk_ids: Sequence[str]) -> int:
        cur.execute(sql_of("DELETE FROM {} WHERE chunk_id = ANY(%s)", keys_table(self.name)), (list(chunk_ids),))
        cur.execute(sql_of("DELETE FROM {} WHERE chunk_id = ANY(%s)", self.name), (list(chunk_ids),))
        return int(cur.rowcount)

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop these chunks and their keys; returns how many chunks were held."""
        ids = [str(c) for c in chunk_ids]
        return self._round_trip(lambda cur: self._delete(cur, ids), "Removing from")

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
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            if regclass(cur, META_TABLE) is None:
                return []
            cur.execute(sql_of("SELECT name FROM {} WHERE ready ORDER BY name", META_TABLE), ())
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
