"""A memory table's rows in PostgreSQL's binary COPY format: a row per key, vectors as pgvector values.

``copy_rows`` sends ``(chunk_id, chunk_hash, key, chunk)`` rows ``COPY_ROWS`` at a time (several COPY
statements in the caller's transaction), so a batch's bytes are never held whole.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Iterable, List, Optional, Sequence

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


def _vector_field(vector: Optional[np.ndarray]) -> bytes:
    """One pgvector value in COPY's binary format (NULL when ``vector`` is None)."""
    if vector is None:
        return struct.pack("!i", -1)
    data = np.asarray(vector, dtype=">f4").tobytes()
    return struct.pack("!ihh", 4 + len(data), len(vector), 0) + data


def _text_field(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!i", len(data)) + data


def copy_rows(cur: Any, table: str, rows: Iterable[tuple]) -> int:
    """COPY (chunk_id, chunk_hash, key, chunk) rows into ``table``, ``COPY_ROWS`` at a time; returns how many."""
    from psycopg2 import sql

    name = sql.Identifier(check_pg_name(table, "A memory table name"))  # libpq ends a name at a NUL: that would be another table
    statement = sql.SQL("COPY {} (chunk_id, chunk_hash, key, chunk) FROM STDIN WITH (FORMAT binary)").format(name)
    head, tail = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0), struct.pack("!h", -1)
    parts: List[bytes] = []
    n = 0
    for chunk_id, chunk_hash, key, chunk in rows:
        parts.append(struct.pack("!h", 4) + _text_field(chunk_id) + _text_field(chunk_hash) + _vector_field(key) + _vector_field(chunk))
        n += 1
        if len(parts) == COPY_ROWS:
            cur.copy_expert(statement, io.BytesIO(b"".join([head, *parts, tail])))
            parts = []
    if parts:
        cur.copy_expert(statement, io.BytesIO(b"".join([head, *parts, tail])))
    return n


def key_rows(
    chunk_ids: Sequence[str], chunk_vectors: np.ndarray, key_vectors: np.ndarray, key_chunk: np.ndarray, hashes: Sequence[str]
) -> Iterable[tuple]:
    """A row per key, and a keyless row for a chunk without keys."""
    has_key = np.zeros(len(chunk_ids), dtype=bool)
    for key, owner in zip(key_vectors, key_chunk.tolist()):
        has_key[owner] = True
        yield str(chunk_ids[owner]), hashes[owner], key, chunk_vectors[owner]
    for row in np.flatnonzero(~has_key).tolist():
        yield str(chunk_ids[row]), hashes[row], None, chunk_vectors[row]
