"""The SQL of a ``PgMemory``: its two tables, their names quoted, the nearest-key lookup, and the IVFFlat probes.

A memory ``name`` is a table with a row per chunk (``chunk_id`` primary key, ``chunk_hash``, ``chunk``) and
a table ``name__keys`` with a row per key (``chunk_id``, ``key``); see ``pg_memory``. Every name goes
into SQL quoted (``sql.Identifier``), never pasted in.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np

from adapterkit.memory.pg_rows import check_pg_name

SAMPLE_QUERIES = 64  # keys looked up as queries to choose the IVFFlat probes
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


def has_halfvec(cur: Any) -> bool:
    """Whether the server's pgvector has half-precision vectors (0.7 and later)."""
    cur.execute("SELECT to_regtype('halfvec') IS NOT NULL")
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


def not_a_memory(cur: Any, name: str) -> bool:
    """Whether a table ``name`` (or ``name__keys``) exists that is not a memory's: a build must never replace the user's own table."""
    if regclass(cur, name) is None and regclass(cur, keys_table(name)) is None:
        return False
    if regclass(cur, META_TABLE) is None:
        return True
    cur.execute(sql_of("SELECT 1 FROM {} WHERE name = %s", META_TABLE), (name,))
    return cur.fetchone() is None


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
    the memory, looked up as queries, find ``recall`` of their exact ``top_k`` other keys; returns the probes and the recall
    measured. Exact: every list probed. Run inside the transaction that built the index."""
    keys = keys_table(table)
    cur.execute(sql_of("SELECT count(*) FROM {}", keys), ())
    total = int(cur.fetchone()[0])
    share = min(100.0, 100.0 * 4 * SAMPLE_QUERIES / max(total, 1))  # block sampling: a few pages, not a scan
    cur.execute(
        sql_of("SELECT ctid::text, key::real[] FROM {} TABLESAMPLE SYSTEM (%s) REPEATABLE (0) LIMIT %s", keys), (share, SAMPLE_QUERIES)
    )
    sample = cur.fetchall()
    if not sample:
        return 1, 1.0
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
        shares = [len(f & e) / len(e) for f, e in zip(found, exact) if e]
        measured = float(np.mean(shares)) if shares else 1.0  # a memory of one key has no other key to find
        if measured >= recall or probes >= lists:
            return probes, measured
        probes = min(lists, math.ceil(probes * 1.5))
