"""Chunk vectors in a real PostgreSQL + pgvector server, at scale: read, train, build a memory, evaluate.

Synthetic 384-d vectors (clustered, so that neighbours exist; speed and memory only) are written with
COPY into a LlamaIndex ``PGVectorStore`` table on a ``LocalPostgres`` server. Then, timed:

1. read every stored vector in batches (``read_stored``);
2. read what training needs into an empty embedding cache (``sample_stored_corpus``): the chunks of
   ``--pairs`` (query, chunk) pairs and a ``--sample`` of the others, so that memory does not grow
   with the store; train an adapter on them (in-batch negatives, one epoch, 20% held out, ranked
   among the pairs' chunks and the sample), documents from the cache only;
3. build a memory of the corpus from the streamed vectors, one key per chunk: in the database
   (``PgMemoryWriter``, an IVFFlat index on the keys) and, up to ``--local-memory-max`` chunks, as
   local ``.npy`` files (``MemoryWriter``) with faiss; key lookups of ``--lookups`` queries are timed
   and their recall@10 measured against exact search over the same keys (streamed);
4. evaluate ``--queries`` queries: exact search over the streamed vectors (``exact_top_k``), and,
   unless ``--no-ann``, the database's own IVFFlat index (``store_top_k``), with its recall against exact.

Peak RSS is this process's (the server runs in its own processes; its data folder's size is reported);
the local memory is built and searched in a child process, whose peak is reported apart.
Run::

    python benchmarks/bench_pgvector.py --chunks 1000000 --output benchmarks/results/pgvector_scale_1m
    python benchmarks/bench_pgvector.py --chunks 100000 --output benchmarks/results/pgvector_scale_100k
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingCache,
    EmbeddingQAFinetuneDataset,
)
from adapterkit.evaluation.runner import provenance
from adapterkit.memory.corpus_memory import CorpusMemory, MemoryWriter
from adapterkit.memory.keys import IVFIndex
from adapterkit.memory.pg_memory import PgMemory, PgMemoryWriter
from adapterkit.stores.postgres import LocalPostgres
from adapterkit.stores.stored_vectors import (
    exact_top_k,
    read_stored,
    recall_at_k,
    store_top_k,
)
from adapterkit.stores.training_sample import sample_stored_corpus


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM on Linux (a child process starts from zero; ru_maxrss would carry the parent's)."""
    try:
        with open("/proc/self/status") as fh:
            return round(next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


BLOCK = 50_000  # rows generated (and written) together: chunk i's vector depends on i alone


def doc_vectors(block: int, centers: np.ndarray, n: int) -> np.ndarray:
    """The vectors of rows block*BLOCK ... (at most n rows in all): a cluster center plus noise."""
    start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
    rng = np.random.default_rng(block)
    idx = np.arange(start, stop) % len(centers)
    return unit(centers[idx] + 0.6 * rng.standard_normal((stop - start, centers.shape[1])).astype(np.float32) / np.sqrt(centers.shape[1]))


def key_vectors(block: int, vectors: np.ndarray) -> np.ndarray:
    """The memory keys of a block's chunks (one per chunk: a noisy copy), seeded by the block alone."""
    rng = np.random.default_rng(1_000_000 + block)
    return unit(vectors + 0.5 * rng.standard_normal(vectors.shape).astype(np.float32) / np.sqrt(vectors.shape[1]))


def rows_of(rows: np.ndarray, centers: np.ndarray, n: int) -> np.ndarray:
    """The stored vectors of the given row numbers, regenerated block by block."""
    out = np.zeros((len(rows), centers.shape[1]), dtype=np.float32)
    for block in np.unique(rows // BLOCK):
        mask = rows // BLOCK == block
        out[mask] = doc_vectors(int(block), centers, n)[rows[mask] - block * BLOCK]
    return out


class LookupEmbedding(BaseEmbedding):
    """The synthetic model of this benchmark: queries' vectors from a table, and a chunk's text ("chunk i") to the
    vector the store holds for it, which the store check embeds again (``_embedded`` counts those)."""

    model_name: str = "synthetic-lookup"
    _embedded: int = PrivateAttr(default=0)  # not a field: the model's identity (its cache key) must not change
    _table: Dict[str, np.ndarray] = PrivateAttr(default_factory=dict)
    _rows: Any = PrivateAttr(default=None)  # (centers, chunks): what regenerates a row's vector

    def add(self, texts: List[str], vectors: np.ndarray) -> None:
        self._table.update(zip(texts, vectors))

    def set_rows(self, centers: np.ndarray, chunks: int) -> None:
        self._rows = (centers, chunks)

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._table[query].tolist()

    def _get_text_embedding(self, text: str) -> List[float]:
        self._embedded += 1
        centers, chunks = self._rows
        return rows_of(np.array([int(text.split()[1])]), centers, chunks)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


def copy_rows(pg: LocalPostgres, table: str, n: int, dim: int, centers: np.ndarray, half: bool = False) -> None:
    """COPY n rows (text, metadata_, node_id, embedding) in PostgreSQL's binary format (``halfvec`` embeddings when ``half``)."""
    import psycopg2

    conn = psycopg2.connect(host=pg.socket_dir, user="postgres", dbname="postgres")
    with conn, conn.cursor() as cur:
        for block in range(0, (n + BLOCK - 1) // BLOCK):
            start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
            vecs = doc_vectors(block, centers, n).astype(">f2" if half else ">f4")
            parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)]
            vec_head = struct.pack("!ihh", 4 + vecs.itemsize * dim, dim, 0)
            for i in range(start, stop):
                text, node = f"chunk {i}".encode(), f"n{i}".encode()
                parts.append(
                    struct.pack("!hi", 4, len(text))
                    + text
                    + struct.pack("!i", 2)
                    + b"{}"
                    + struct.pack("!i", len(node))
                    + node
                    + vec_head
                    + vecs[i - start].tobytes()
                )
            parts.append(struct.pack("!h", -1))
            cur.copy_expert(
                f"COPY {table} (text, metadata_, node_id, embedding) FROM STDIN WITH (FORMAT binary)", io.BytesIO(b"".join(parts))
            )
    conn.close()


def timed(rows: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    rows[name] = round(time.perf_counter() - start, 1)
    rows[f"peak_rss_after_{name.removesuffix('_s')}_mb"] = peak_rss_mb()
    print(f"{name}: {rows[name]} s, peak RSS {peak_rss_mb()} MB", flush=True)
    return value


def ann_eval(rows: dict, pg: LocalPostgres, store, table: str, queries: np.ndarray, exact: List[List[str]], args) -> None:
    """The database's own IVFFlat index: build time, latency and recall@10 against exact search."""
    timed(
        rows,
        "ivfflat_build_s",
        lambda: pg.psql(
            f"SET maintenance_work_mem = '2GB'; CREATE INDEX ON {table} USING ivfflat "
            f"(embedding {'halfvec' if args.store_half else 'vector'}_cosine_ops) "
            f"WITH (lists = {args.ivf_lists});"
        ),
    )
    pg.psql(f"ALTER DATABASE postgres SET ivfflat.probes = {args.probes};")
    store_ann = pg.vector_store(
        "bench", embed_dim=args.dim, hnsw=False, use_halfvec=args.store_half
    )  # new connections see the probes setting
    found = timed(rows, "ivfflat_eval_s", lambda: store_top_k(store_ann, queries, 10))
    rows["ivfflat_recall@10"] = round(recall_at_k(found, exact, 10), 4)
    rows["ivfflat_ms_per_query"] = round(rows["ivfflat_eval_s"] * 1000 / len(queries), 2)


def memories(rows: dict, pg: LocalPostgres, store, work: Path, centers: np.ndarray, args) -> None:
    """One key per chunk, in the database and (small enough) locally; lookups against exact search."""

    def build_db() -> PgMemory:
        with PgMemoryWriter(pg.url(), "bench_memory", args.dim, index="ivfflat", lists=args.memory_lists, top_k=10) as writer:
            for block, batch in enumerate(read_stored(store, BLOCK)):
                writer.add(batch.ids, batch.vectors, key_vectors(block, batch.vectors), np.arange(len(batch.ids)))
        return PgMemory(pg.url(), "bench_memory")  # probes: chosen at the build for recall 0.95 on sampled keys

    db = timed(rows, "memory_db_build_s", build_db)
    built = db.get_config_dict()
    rows.update({f"memory_db_{k}": built[k] for k in ("half", "lists", "probes", "measured_recall")})
    sizes = "SELECT pg_total_relation_size('bench_memory') + pg_total_relation_size('bench_memory__keys');"
    rows["memory_db_mb"] = round(int(pg.psql(sizes).split()[2]) / 2**20, 1)

    rng = np.random.default_rng(7)
    picked = np.sort(rng.choice(args.chunks, size=args.lookups, replace=False))
    q = key_vectors(-1, rows_of(picked, centers, args.chunks))  # queries near keys: noisy copies of chunks
    ids_exact, _ = exact_top_k(q, (type(b)(b.ids, b.texts, key_vectors(i, b.vectors)) for i, b in enumerate(read_stored(store, BLOCK))), 10)
    start = time.perf_counter()
    _, ids_db, _ = db.lookup(q)
    rows["memory_db_ms_per_lookup"] = round((time.perf_counter() - start) * 1000 / len(q), 2)
    rows["memory_db_recall@10"] = round(recall_at_k(ids_db, ids_exact, 10), 4)
    rows["peak_rss_after_memory_db_lookup_mb"] = peak_rss_mb()
    if args.chunks <= args.local_memory_max:  # in a process of its own: its RSS (the faiss index, mapped keys) is reported apart
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            rows.update(pool.apply(local_memory, (pg.url(), store.table_name, work, q, ids_exact, args.dim)))


def local_memory(url: str, table: str, work: Path, q: np.ndarray, ids_exact: List[List[str]], dim: int) -> dict:
    """The same keys as local ``.npy`` files (``MemoryWriter``) looked up through faiss: build, size, latency, recall."""
    from llama_index.vector_stores.postgres import PGVectorStore

    store = PGVectorStore.from_params(connection_string=url, table_name=table, embed_dim=dim)
    rows: dict = {}

    def build_local() -> CorpusMemory:
        writer = MemoryWriter(work / "memory", dim)
        for block, batch in enumerate(read_stored(store, BLOCK)):
            writer.add(batch.ids, batch.vectors, key_vectors(block, batch.vectors), np.arange(len(batch.ids)))
        writer.close()
        return CorpusMemory.load(work / "memory")

    memory = timed(rows, "memory_local_build_s", build_local)
    rows["memory_local_mb"] = round(sum(p.stat().st_size for p in (work / "memory").iterdir()) / 2**20, 1)
    index = timed(rows, "memory_local_faiss_build_s", lambda: IVFIndex(memory.keys))
    start = time.perf_counter()
    _, found = index.search(q, 10)
    rows["memory_local_faiss_ms_per_lookup"] = round((time.perf_counter() - start) * 1000 / len(q), 2)
    rows["memory_local_faiss_recall@10"] = round(
        recall_at_k([[memory.chunk_ids[memory.owner[r]] for r in row if r >= 0] for row in found], ids_exact, 10), 4
    )
    rows["memory_local_peak_rss_mb"] = peak_rss_mb()
    return {k.replace("peak_rss_after_memory_local", "memory_local_peak_rss_after"): v for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--pairs", type=int, default=20_000, help="training (query, chunk) pairs")
    parser.add_argument("--sample", type=int, default=50_000, help="other chunks read for training")
    parser.add_argument("--queries", type=int, default=2_000, help="evaluation queries")
    parser.add_argument("--no-ann", action="store_true", help="skip the IVFFlat index on the chunks (its build takes long past 1M rows)")
    parser.add_argument("--lookups", type=int, default=1_000, help="memory key lookups timed")
    parser.add_argument("--local-memory-max", type=int, default=1_000_000, help="build the local .npy memory up to this many chunks")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per read from the server")
    parser.add_argument("--ivf-lists", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--memory-lists", type=int, default=None, help="IVFFlat lists of the memory's keys (default: the writer's)")
    parser.add_argument("--store-half", action="store_true", help="the store's own vectors in half precision (halfvec)")
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = unit(rng.standard_normal((max(1, args.chunks // 100), args.dim)).astype(np.float32))
    rows: dict = {"chunks": args.chunks, "dim": args.dim, "pairs": args.pairs, "sample": args.sample, "queries": args.queries}
    work = Path(tempfile.mkdtemp(prefix="adapterkit-pgbench-"))
    try:
        run(rows, work, centers, rng, args)
    finally:  # the server's data folder is gigabytes past 1M rows
        shutil.rmtree(work, ignore_errors=True)
    rows["peak_rss_mb"] = peak_rss_mb()
    rows["provenance"] = provenance()
    print(json.dumps(rows, indent=2))
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(rows, indent=2) + "\n")
        command = (
            f"python benchmarks/bench_pgvector.py --chunks {args.chunks} --pairs {args.pairs} --sample {args.sample} "
            f"--queries {args.queries}{' --no-ann' if args.no_ann else ''} --local-memory-max {args.local_memory_max} "
            f"{f'--memory-lists {args.memory_lists} ' if args.memory_lists else ''}{'--store-half ' if args.store_half else ''}"
            f"--lookups {args.lookups} "
            f"--output {args.output}"
        )
        table_md = "\n".join(f"| {k} | {v} |" for k, v in rows.items() if k != "provenance")
        Path(args.output + ".md").write_text(
            f"# Stored vectors in PostgreSQL + pgvector: {args.chunks:,} chunks ({args.dim}-d, synthetic)\n\n"
            f"`{command}`\n\n| measure | value |\n|---|---|\n{table_md}\n"
        )


def run(rows: dict, work: Path, centers: np.ndarray, rng: np.random.Generator, args) -> None:
    """Write, read, train, build memories and evaluate on a server in ``work``; measures go into ``rows``."""
    with LocalPostgres(work / "pg") as pg:
        store = pg.vector_store("bench", embed_dim=args.dim, hnsw=False, use_halfvec=args.store_half)
        store.add([])  # creates the table
        table = f"data_{store.table_name}"
        rows["store_half"] = args.store_half
        timed(rows, "write_copy_s", lambda: copy_rows(pg, table, args.chunks, args.dim, centers, args.store_half))
        rows["table_mb"] = round(int(pg.psql(f"SELECT pg_total_relation_size('{table}');").split()[2]) / 2**20, 1)

        timed(rows, "read_stream_s", lambda: sum(len(b.ids) for b in read_stored(store, args.batch)))
        model = LookupEmbedding(embed_batch_size=2048)
        model.set_rows(centers, args.chunks)
        cache = EmbeddingCache(work / "cache")

        # Training pairs: each query is a noisy copy of its chunk's vector (node ids are n0, n1, ...).
        chosen = rng.choice(args.chunks, size=args.pairs, replace=False)
        noisy = lambda rows_: unit(
            rows_of(rows_, centers, args.chunks) + 0.4 * rng.standard_normal((len(rows_), args.dim)).astype(np.float32) / np.sqrt(args.dim)
        )  # noqa: E731
        model.add([f"query {i}" for i in chosen], noisy(chosen))
        drawn = timed(
            rows,
            "read_for_training_s",
            lambda: sample_stored_corpus(
                store, model, keep={f"n{i}" for i in chosen}, sample=args.sample, cache=cache, batch_size=args.batch
            ),
        )
        rows["training_chunks"] = len(drawn.corpus)
        rows["documents_embedded_to_check_the_store"] = model._embedded
        train = EmbeddingQAFinetuneDataset(
            queries={f"q{i}": f"query {i}" for i in chosen}, corpus=drawn.corpus, relevant_docs={f"q{i}": [f"n{i}"] for i in chosen}
        )
        engine = timed(
            rows,
            "engine_from_cache_s",
            lambda: EmbeddingAdapterFinetuneEngine(
                train,
                model,
                cache=cache,
                negatives="in_batch",
                batch_size=256,
                epochs=1,
                show_progress=False,
                model_output_path=work / "adapter",
            ),
        )
        timed(rows, "train_s", engine.finetune)

        memories(rows, pg, store, work, centers, args)

        picked = rng.choice(args.chunks, size=args.queries, replace=False)
        queries = engine.model(torch.as_tensor(noisy(picked))).detach().numpy()
        exact, _ = timed(rows, "exact_eval_streamed_s", lambda: exact_top_k(queries, read_stored(store, args.batch), 10))
        rows["exact_hit@10"] = round(float(np.mean([f"n{p}" in e for p, e in zip(picked, exact)])), 4)
        if not args.no_ann:
            ann_eval(rows, pg, store, table, queries, exact, args)
        rows["server_data_mb"] = round(sum(p.stat().st_size for p in (work / "pg").rglob("*") if p.is_file()) / 2**20, 1)


if __name__ == "__main__":
    main()
