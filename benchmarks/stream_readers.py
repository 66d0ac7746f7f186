"""Streaming a pgvector table: adapterkit's COPY reader (psycopg2) against psycopg 3 with pgvector's adapter.

adapterkit reads ``(node_id, text, embedding)`` rows of a LlamaIndex ``PGVectorStore`` table with
``COPY ... TO STDOUT (FORMAT binary)`` through psycopg2 and parses the binary rows itself
(``adapterkit.stores.stored_vectors.read_stored``). psycopg 3 can stream the same COPY and decode
each field with a registered loader (``pgvector.psycopg.register_vector``), which would retire the
hand-written parser. Both read the same table on a ``LocalPostgres`` server, best of ``--repeats``;
reported: rows per second and whether both gave the same ids and vectors. Needs
``pip install 'psycopg[binary]'`` (not one of adapterkit's requirements). Run::

    python benchmarks/stream_readers.py --chunks 200000 --output benchmarks/results/stream_readers
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pgvector import copy_rows  # noqa: E402

from adapterkit.evaluation.runner import provenance  # noqa: E402
from adapterkit.stores.postgres import LocalPostgres  # noqa: E402
from adapterkit.stores.stored_vectors import read_stored  # noqa: E402


def with_psycopg3(url: str, table: str, batch: int) -> Tuple[List[str], np.ndarray]:
    """The whole table through psycopg 3's binary COPY, pgvector's loader decoding each vector."""
    import psycopg
    from pgvector.psycopg import register_vector

    ids: List[str] = []
    blocks: List[np.ndarray] = []
    rows: List[np.ndarray] = []
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT node_id, text, embedding FROM {table} ORDER BY id) TO STDOUT WITH (FORMAT binary)") as copy:
                copy.set_types(["varchar", "varchar", "vector"])
                for node_id, _text, vector in copy.rows():
                    ids.append(node_id)
                    rows.append(vector.to_numpy())  # pgvector's Vector, decoded from the binary field
                    if len(rows) == batch:
                        blocks.append(np.stack(rows).astype(np.float32))
                        rows = []
    if rows:
        blocks.append(np.stack(rows).astype(np.float32))
    return ids, np.concatenate(blocks)


def with_adapterkit(store, batch: int) -> Tuple[List[str], np.ndarray]:
    ids: List[str] = []
    blocks: List[np.ndarray] = []
    for b in read_stored(store, batch):
        ids.extend(b.ids)
        blocks.append(np.asarray(b.vectors, dtype=np.float32))
    return ids, np.concatenate(blocks)


def best_of(repeats: int, run) -> Tuple[float, Tuple[List[str], np.ndarray]]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    centers = np.random.default_rng(0).standard_normal((64, args.dim)).astype(np.float32)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as work, LocalPostgres(Path(work) / "pg") as pg:
        store = pg.vector_store("stream", embed_dim=args.dim, hnsw=False)
        store.add([])  # creates the table
        table = f"data_{store.table_name}"
        copy_rows(pg, table, args.chunks, args.dim, centers)
        url = pg.url(driver="psycopg").replace("postgresql+psycopg://", "postgresql://")
        ours_s, ours = best_of(args.repeats, lambda: with_adapterkit(store, args.batch))
        theirs_s, theirs = best_of(args.repeats, lambda: with_psycopg3(url, table, args.batch))
    same = ours[0] == theirs[0] and np.array_equal(ours[1], theirs[1])
    for name, seconds in (("adapterkit COPY reader (psycopg2, own parser)", ours_s), ("psycopg 3 COPY + pgvector loader", theirs_s)):
        rows.append({"reader": name, "seconds": round(seconds, 2), "rows_per_s": round(args.chunks / seconds)})
        print(rows[-1], flush=True)
    command = f"python benchmarks/stream_readers.py --chunks {args.chunks} --output benchmarks/results/stream_readers"
    result = {"command": command, "chunks": args.chunks, "dim": args.dim, "same_rows": same, "provenance": provenance(), "rows": rows}
    print("same ids and vectors:", same)
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            "# Streaming a pgvector table",
            "",
            f"`{command}`",
            "",
            f"| reader | seconds (best of {args.repeats}) | rows/s |",
            "|---|---|---|",
        ]
        lines += [f"| {r['reader']} | {r['seconds']} | {r['rows_per_s']:,} |" for r in rows]
        lines += [
            "",
            f"{args.chunks:,} rows of {args.dim}-d vectors; both readers gave the same ids and vectors: {'yes' if same else 'no'}.",
        ]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
