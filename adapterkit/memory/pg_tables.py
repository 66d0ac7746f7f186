"""The SQL of a ``PgMemory``: its connection and error, its names, its two tables, the nearest-key lookup, the IVFFlat probes.

A memory ``name`` is a table with a row per chunk (``chunk_id`` primary key, ``chunk_hash``, ``chunk``) and
a table ``name__keys`` with a row per key (``chunk_id``, ``key``); see ``pg_memory``. Every name goes
into SQL quoted (``sql.Identifier``), never pasted in.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Tuple

import numpy as np

from adapterkit.errors import AdapterkitError
from adapterkit.memory.pg_rows import check_pg_name

# PostgreSQL names stop at 63 bytes: the staging suffix and "__keys" add 16, an index name 15; "__" is the tables' own separator
_NAME = re.compile(r"(?!.*__)[a-z_][a-z0-9_]{0,39}")
SAMPLE_QUERIES = 100  # keys looked up as queries to choose the IVFFlat probes, spread over a block sample of four times as many
META_TABLE = "adapterkit_memories"  # name, config (JSON), ready: a memory is read only once ready


def quoted(name: str) -> Any:
    """``name`` quoted (``sql.Identifier``) for a statement run with parameters: a reserved word (``order``, ``user``) is a
    valid memory name too. psycopg2 %-formats such a statement as a whole, so a ``%`` in the name is doubled (else a
    ``%s`` there would take a value's place)."""
    from psycopg2 import sql

    check_pg_name(name, "A memory table or index name")  # libpq ends a name at a NUL: "victim\0x" would be "victim"
    return sql.Identifier(name.replace("%", "%%"))


def sql_of(template: str, *names: str) -> Any:
    """``template`` with each ``{}`` the quoted name of ``names``: run it with parameters (``()`` when it has none)."""
    from psycopg2 import sql

    return sql.SQL(template).format(*(quoted(n) for n in names))


def quoted_value(cur: Any, name: str) -> str:
    """``name`` quoted, as a value for ``to_regclass(%s)``, which then takes it as written (not lower-cased)."""
    from psycopg2 import sql

    return sql.Identifier(check_pg_name(name, "A memory table name")).as_string(cur)


def regclass(cur: Any, name: str) -> Any:
    """The table ``name`` if it exists, else None."""
    cur.execute("SELECT to_regclass(%s)", (quoted_value(cur, name),))
    return cur.fetchone()[0]


def keys_table(table: str) -> str:
    """The table of ``table``'s keys."""
    return table + "__keys"


def vector_type(half: bool, dim: int) -> str:
    return f"{'halfvec' if half else 'vector'}({int(dim)})"


def has_type(cur: Any, name: str) -> bool:
    """Whether the database has the type ``name`` (``vector``: pgvector is installed; ``halfvec``: it is 0.7 or later)."""
    cur.execute("SELECT to_regtype(%s) IS NOT NULL", (name,))
    return bool(cur.fetchone()[0])


def create_tables(cur: Any, table: str, dim: int, key_dim: int, half: bool) -> None:
    keys = keys_table(table)
    cur.execute(
        sql_of(
            "CREATE TABLE IF NOT EXISTS {} (chunk_id text NOT NULL CONSTRAINT {} PRIMARY KEY, chunk_hash text NOT NULL, "
            f"chunk {vector_type(half, dim)} NOT NULL)",
            table,
            table + "__pk",
        ),
        (),
    )
    cur.execute(sql_of(f"CREATE TABLE IF NOT EXISTS {{}} (chunk_id text NOT NULL, key {vector_type(half, key_dim)} NOT NULL)", keys), ())
    cur.execute(sql_of("CREATE INDEX IF NOT EXISTS {} ON {} (chunk_id)", table + "__kc", keys), ())
    cur.execute(
        sql_of("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, config text NOT NULL, ready boolean NOT NULL)", META_TABLE), ()
    )


def staging_table(name: str) -> str:
    """The table a build of memory ``name`` writes until ``finish()``."""
    return name + "__building"


INDEX_SUFFIXES = ("__pk", "__kc", "__ann")  # a memory table's primary key, its keys' chunk_id index, their ANN index


def foreign_names(cur: Any, name: str) -> List[str]:
    """The tables and indexes a build of memory ``name`` would create, replace or rename that are not that memory's:
    a user's own, or another memory's (an earlier adapterkit allowed ``__`` in names). Empty when the build may go on."""
    tables = [name, keys_table(name), staging_table(name), keys_table(staging_table(name))]
    records: set = set()
    if regclass(cur, META_TABLE) is not None:
        cur.execute(sql_of("SELECT name FROM {} WHERE name = ANY(%s)", META_TABLE), (tables,))
        records = {row[0] for row in cur.fetchall()}
    ours = {t for base in (name, staging_table(name)) if base in records for t in (base, keys_table(base))}
    foreign = [t for t in tables[1::2] if t in records]  # another memory's record under our keys tables' names
    foreign += [t for t in tables if t not in ours and t not in foreign and regclass(cur, t) is not None]
    for base in (name, staging_table(name)):
        for index in (base + suffix for suffix in INDEX_SUFFIXES):
            cur.execute(
                "SELECT t.relname FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                "LEFT JOIN pg_class t ON t.oid = i.indrelid WHERE c.oid = to_regclass(%s)",
                (quoted_value(cur, index),),
            )
            row = cur.fetchone()
            if row is not None and row[0] not in ours:
                foreign.append(index)
    return foreign


def column_types(cur: Any, table: str) -> Dict[str, str]:
    """The vector columns of a memory's two tables: ``{"chunk": "halfvec(384)", "key": ...}``."""
    found: Dict[str, str] = {}
    for held, column in ((table, "chunk"), (keys_table(table), "key")):
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            (quoted_value(cur, held), column),
        )
        found.update(dict(cur.fetchall()))
    return found


def vector_literals(queries: np.ndarray) -> List[str]:
    return ["[" + ",".join(f"{x:.9g}" for x in row) + "]" for row in queries]


def nearest(table: str, half: bool, ids_only: bool = False) -> Any:
    """A batch of queries' nearest keys, one ``LATERAL`` lookup each: ``(query number, cosine, chunk id, chunk vector)`` rows
    (``(query number, key row)`` with ``ids_only``). Parameters: the queries as vector literals, then how many per query."""
    cast = "halfvec" if half else "vector"
    if ids_only:
        return sql_of(
            f"SELECT q.i, m.ctid::text FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, i) CROSS JOIN LATERAL "
            f"(SELECT ctid FROM {{}} ORDER BY key <=> q.v::{cast} LIMIT %s) AS m",
            keys_table(table),
        )
    return sql_of(
        f"SELECT q.i, m.cos, m.chunk_id, c.chunk::real[] FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, i) CROSS JOIN LATERAL "
        f"(SELECT 1 - (key <=> q.v::{cast}) AS cos, chunk_id FROM {{}} ORDER BY key <=> q.v::{cast} LIMIT %s) AS m "
        "JOIN {} AS c ON c.chunk_id = m.chunk_id",
        keys_table(table),
        table,
    )


def found_rows(cur: Any, search: Any, texts: List[str], k: int) -> List[set]:
    cur.execute(search, (texts, k))
    found: List[set] = [set() for _ in texts]
    for i, row in cur.fetchall():
        found[int(i) - 1].add(row)
    return found


def choose_probes(cur: Any, table: str, half: bool, lists: int, top_k: int, recall: float) -> Tuple[int, float]:
    """The fewest IVFFlat probes (from the square root of the lists up, by half again each step) at which keys sampled from
    the memory, looked up as queries, find ``recall`` of their exact ``top_k`` other keys (their mean share less two standard
    errors); returns the probes and the mean share measured. Exact: every list probed. Run inside the transaction that
    built the index."""
    keys = keys_table(table)
    cur.execute(sql_of("SELECT count(*) FROM {}", keys), ())
    total = int(cur.fetchone()[0])
    share = min(100.0, 100.0 * 4 * SAMPLE_QUERIES / max(total, 1))  # block sampling: a few pages, not a scan
    cur.execute(sql_of("SELECT ctid::text, key::real[] FROM {} TABLESAMPLE SYSTEM (%s) REPEATABLE (0)", keys), (share,))
    sample = cur.fetchall()
    sample = [sample[int(i)] for i in np.linspace(0, len(sample) - 1, min(SAMPLE_QUERIES, len(sample)))] if sample else []
    if len(sample) < min(SAMPLE_QUERIES, total):  # a few pages of short rows can come back with too few: read them in order
        cur.execute(sql_of("SELECT ctid::text, key::real[] FROM {} LIMIT %s", keys), (SAMPLE_QUERIES,))
        sample = cur.fetchall()
    if not sample:
        return max(1, math.ceil(math.sqrt(lists))), 1.0  # no key: nothing to find, and nothing missed
    own = [row[0] for row in sample]
    texts = vector_literals(np.asarray([row[1] for row in sample], dtype=np.float32))
    search = nearest(table, half, ids_only=True)
    cur.execute("SET LOCAL enable_seqscan = off")  # the index, probing every list, is exact; a scan per query is far slower
    cur.execute("SET LOCAL ivfflat.probes = %s", (int(lists),))
    exact = [e - {o} for e, o in zip(found_rows(cur, search, texts, top_k + 1), own)]  # less the query's own key
    probes = max(1, math.ceil(math.sqrt(lists)))
    while True:
        cur.execute("SET LOCAL ivfflat.probes = %s", (probes,))
        found = found_rows(cur, search, texts, top_k + 1)
        shares = np.asarray([len(f & e) / len(e) for f, e in zip(found, exact) if e])
        measured = float(shares.mean()) if len(shares) else 1.0  # a memory of one key has no other key to find
        # the sample's mean less two standard errors: the recall of queries beyond the sample, with a margin for its chance
        bound = measured - 2 * float(shares.std(ddof=1)) / math.sqrt(len(shares)) if len(shares) > 1 else measured
        if bound >= recall or probes >= lists:
            return probes, measured
        probes = min(lists, math.ceil(probes * 1.5))


class PgMemoryError(AdapterkitError, ValueError):
    """A memory table is missing, unfinished, or does not fit its record."""


def connect(url: str) -> Any:
    """A DB-API (psycopg2) connection from a SQLAlchemy URL (what ``PGVectorStore.connection_string`` holds)."""
    import psycopg2
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"A memory table lives in PostgreSQL with pgvector, not {parsed.get_backend_name()!r}.")
    engine = sqlalchemy.create_engine(parsed.set(drivername="postgresql+psycopg2"))  # the transactions below are psycopg2's
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return psycopg2.connect(*args, **kwargs)


def failed_write(name: str, exc: Exception) -> PgMemoryError:
    """The error for a failed write: the server gone (resume later), or the data refused (fix it)."""
    import psycopg2

    said = (
        f"Writing memory {name!r} failed ({type(exc).__name__}: {str(exc).strip()}); "
        "that batch was rolled back and nothing unfinished is ever read."
    )
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return PgMemoryError(f"{said} Continue with PgMemoryWriter(..., resume=True) once the server is back.")
    return PgMemoryError(f"{said} The server refused the rows: fix them and write the batch again.")


def not_ours(name: str, foreign: List[str]) -> PgMemoryError:
    return PgMemoryError(
        f"{', '.join(map(repr, foreign))} on this server {'is' if len(foreign) == 1 else 'are'} not an adapterkit memory's own, "
        f"and a build of memory {name!r} would create, replace or rename {'it' if len(foreign) == 1 else 'them'} "
        "(a table or index of your own, or another memory's): choose another name."
    )


def check_name(name: str) -> str:
    if name == META_TABLE:
        raise ValueError(f"{META_TABLE!r} is the table that records the memories: choose another memory name.")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"A memory name is 1-40 lower-case letters, digits or _ (starting with a letter or _, never two _ in a row), got {name!r}."
        )
    return name
