"""A memory's rows in PostgreSQL's binary COPY format: a row per chunk and a row per key, vectors as pgvector values.

``copy_rows`` sends rows ``COPY_ROWS`` at a time (several COPY statements in the caller's transaction),
so a batch's bytes are never held whole.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Iterable, List, Sequence, Tuple

import numpy as np

MAX_NAME_BYTES = 63  # PostgreSQL cuts longer names short (NAMEDATALEN - 1), so two long names would meet in one table
COPY_ROWS = 8192  # rows per COPY statement, all in one transaction: what is held in memory at once while writing


def check_pg_name(name: Any, what: str, room: int = 0) -> str:
    """``name`` when PostgreSQL holds it as given with ``room`` bytes added (a prefix or suffix); else a ValueError
    that says what to change. Names are always quoted (``sql.Identifier``): any other character is fine."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}.")
    shown = repr(name) if len(name) <= 70 else f"{name[:60]!r}... ({len(name)} characters)"
    if "\x00" in name:  # libpq ends a name at a NUL: it would quietly name another table
        raise ValueError(f"{what} {shown} contains a NUL byte, which no PostgreSQL name can hold: remove it.")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {shown} is not valid Unicode text (it holds a lone surrogate): use plain text.") from None
    if size + room > MAX_NAME_BYTES:
        added = f", and {room} are added to it for its table and index names" if room else ""
        raise ValueError(
            f"{what} {shown} is {size} bytes long{added}: PostgreSQL names stop at {MAX_NAME_BYTES} bytes "
            f"(longer ones are cut short and can meet). Use a name of at most {MAX_NAME_BYTES - room} bytes."
        )
    return name


def _vector_field(vector: np.ndarray, half: bool) -> bytes:
    """One pgvector value (``halfvec`` when ``half``, else ``vector``) in COPY's binary format."""
    data = np.asarray(vector, dtype=">f2" if half else ">f4").tobytes()
    return struct.pack("!ihh", 4 + len(data), len(vector), 0) + data


def _text_field(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!i", len(data)) + data


def copy_rows(cur: Any, table: str, columns: Sequence[str], rows: Iterable[tuple], half: bool = False) -> int:
    """COPY ``rows`` into ``columns`` of ``table``, ``COPY_ROWS`` at a time; returns how many. A str goes as text, anything
    else as a pgvector value (``halfvec`` when ``half``)."""
    from psycopg2 import sql

    name = sql.Identifier(check_pg_name(table, "A memory table name"))  # libpq ends a name at a NUL: that would be another table
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(name, sql.SQL(", ").join(map(sql.Identifier, columns)))
    head, tail = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0), struct.pack("!h", -1)
    count = struct.pack("!h", len(columns))
    parts: List[bytes] = []
    n = 0
    for row in rows:
        parts.append(count + b"".join(_text_field(v) if isinstance(v, str) else _vector_field(v, half) for v in row))
        n += 1
        if len(parts) == COPY_ROWS:
            cur.copy_expert(statement, io.BytesIO(b"".join([head, *parts, tail])))
            parts = []
    if parts:
        cur.copy_expert(statement, io.BytesIO(b"".join([head, *parts, tail])))
    return n


def write_chunks(
    cur: Any,
    tables: Tuple[str, str],
    chunk_ids: Sequence[str],
    chunk_vectors: np.ndarray,
    key_vectors: np.ndarray,
    key_chunk: np.ndarray,
    hashes: Sequence[str],
    half: bool,
) -> int:
    """COPY a row per chunk ``(chunk_id, chunk_hash, chunk)`` into ``tables[0]`` and a row per key ``(chunk_id, key)`` into
    ``tables[1]``; returns the keys written. Each vector is held once; a chunk without keys has no key row. The vectors are
    unit rows (``checked_rows``): half precision holds every value of them."""
    ids = [str(c) for c in chunk_ids]
    copy_rows(cur, tables[0], ("chunk_id", "chunk_hash", "chunk"), zip(ids, map(str, hashes), chunk_vectors, strict=True), half)
    return copy_rows(cur, tables[1], ("chunk_id", "key"), ((ids[o], k) for k, o in zip(key_vectors, key_chunk.tolist())), half)
