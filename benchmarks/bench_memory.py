"""A corpus memory at scale: 1M chunks and 4M keys (synthetic 384-d vectors), exact against IVF lookup.

Vectors (unit length): chunks drawn around 10,000 topic centres (cosine about 0.8 to their centre);
each chunk has ``--keys-per-chunk`` keys near it (cosine about 0.75, as a chunk's sentences are);
queries are keys of random chunks moved a little (cosine about 0.9 to that key). Measured: writing
the memory (``MemoryWriter``), its size on disk, building the IVF index, query latency one query at a
time and in batches, the recall of the IVF top-k keys against exact search, how close the IVF pull is
to the exact one, and the process's resident memory. Run::

    python benchmarks/bench_memory.py --chunks 1000000 --keys-per-chunk 4 --output benchmarks/results/memory_scale
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adapterkit.memory.corpus_memory import CorpusMemory, MemoryWriter
from adapterkit.memory.keys import ExactIndex, IVFIndex


def rss_mb(field: str = "RssAnon") -> float:
    """Resident memory of this process: ``RssAnon`` (its own allocations) or ``VmRSS`` (also the pages
    of memory-mapped files it touched, which the OS can drop at any time)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(vectors: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at about ``cosine`` to ``vectors`` (unit), in random directions."""
    spread = np.sqrt(1 / cosine**2 - 1)
    return unit(vectors + spread * unit(rng.normal(size=vectors.shape)))


def write_memory(folder: Path, chunks: int, per_chunk: int, dim: int, seed: int, batch: int = 50_000) -> float:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(10_000, dim)))
    start = time.perf_counter()
    with MemoryWriter(folder, dim, index="ivf") as writer:
        for first in range(0, chunks, batch):
            n = min(batch, chunks - first)
            vecs = near(centres[rng.integers(0, len(centres), size=n)], 0.8, rng)
            keys = near(np.repeat(vecs, per_chunk, axis=0), 0.75, rng)
            writer.add([f"chunk-{first + i}" for i in range(n)], vecs, keys, np.repeat(np.arange(n), per_chunk))
    return time.perf_counter() - start


def latency_ms(index, queries: np.ndarray, k: int, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        index.search(queries[i : i + batch], k)
    return 1000 * (time.perf_counter() - start) / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--keys-per-chunk", type=int, default=4)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--folder", default=None, help="where the memory is written (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="memory-scale-"))
    rows = {"chunks": args.chunks, "keys": args.chunks * args.keys_per_chunk, "dim": args.dim}
    rows["write_s"] = round(write_memory(folder, args.chunks, args.keys_per_chunk, args.dim, seed=0), 1)
    rows["disk_mb"] = round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1)
    memory = CorpusMemory.load(folder)  # arrays stay memory-mapped
    rows["anon_rss_after_load_mb"] = round(rss_mb(), 1)
    start = time.perf_counter()
    ivf = IVFIndex(memory.keys, nprobe=args.nprobe[0])
    rows["ivf_build_s"] = round(time.perf_counter() - start, 1)
    rows["ivf_nlist"], rows["ivf_codes_mb"] = ivf.index.nlist, round(ivf.nbytes / 2**20, 1)
    rows["anon_rss_after_ivf_mb"] = round(rss_mb(), 1)
    rng = np.random.default_rng(1)
    picked = rng.integers(0, len(memory.keys), size=args.queries)
    queries = near(np.array(memory.keys[np.sort(picked)]), 0.9, rng)
    exact = ExactIndex(memory.keys)
    exact_sims, exact_rows = exact.search(queries[:50], args.top_k)  # ground truth (exact scans every key)
    exact_weight = torch.softmax(100.0 * torch.as_tensor(exact_sims), dim=-1).numpy()  # the memory's attention over them
    rows["exact_ms_per_query_batch50"] = round(latency_ms(exact, queries[:50], args.top_k, 50), 1)
    rows["ivf"] = []
    memory.use_index(ivf)
    exact_memory = CorpusMemory.load(folder)
    exact_memory.use_index(exact)
    exact_pull = exact_memory.pull(torch.as_tensor(queries[:50]))
    for nprobe in args.nprobe:
        ivf.index.nprobe = nprobe
        _, found = ivf.search(queries[:50], args.top_k)
        recall = {
            n: round(float(np.mean([len(set(a[:n]) & set(e[:n])) / n for a, e in zip(found, exact_rows)])), 4) for n in (1, 8, args.top_k)
        }
        captured = float(np.mean([w[np.isin(e, a)].sum() for w, a, e in zip(exact_weight, found, exact_rows)]))
        agreement = float(torch.nn.functional.cosine_similarity(memory.pull(torch.as_tensor(queries[:50])), exact_pull, dim=-1).mean())
        rows["ivf"].append(
            {
                "nprobe": nprobe,
                **{f"recall@{n}": r for n, r in recall.items()},
                "attention_found": round(captured, 4),
                "pull_cosine_vs_exact": round(agreement, 4),
                "ms_per_query_1": round(latency_ms(ivf, queries, args.top_k, 1), 3),
                "ms_per_query_batch100": round(latency_ms(ivf, queries, args.top_k, 100), 3),
            }
        )
        print(rows["ivf"][-1], flush=True)
    rows["anon_rss_end_mb"], rows["rss_incl_mapped_files_end_mb"], rows["peak_rss_mb"] = (
        round(rss_mb(), 1),
        round(rss_mb("VmRSS"), 1),
        round(peak_mb(), 1),
    )
    rows["command"] = "python benchmarks/bench_memory.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if v is not None and k not in ("output", "folder")
    )
    print(json.dumps(rows, indent=2))
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(rows, indent=2) + "\n")
        lines = [
            f"# Corpus memory at scale: {rows['chunks']:,} chunks, {rows['keys']:,} keys ({rows['dim']}-d, synthetic)",
            "",
            f"`{rows['command']}`",
            "",
            "| measure | value |",
            "|---|---|",
        ]
        for key in (
            "write_s",
            "disk_mb",
            "anon_rss_after_load_mb",
            "ivf_build_s",
            "ivf_nlist",
            "ivf_codes_mb",
            "anon_rss_after_ivf_mb",
            "exact_ms_per_query_batch50",
            "anon_rss_end_mb",
            "rss_incl_mapped_files_end_mb",
            "peak_rss_mb",
        ):
            lines.append(f"| {key} | {rows[key]} |")
        lines += [
            "",
            f"| nprobe | recall@1 | recall@8 | recall@{args.top_k} | share of the exact softmax weight found | pull cosine vs exact "
            "| ms/query (1 at a time) | ms/query (batches of 100) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['nprobe']} | {r['recall@1']} | {r['recall@8']} | {r[f'recall@{args.top_k}']} | {r['attention_found']} | "
            f"{r['pull_cosine_vs_exact']} | {r['ms_per_query_1']} | {r['ms_per_query_batch100']} |"
            for r in rows["ivf"]
        ]
        lines += [
            "",
            "Recall: the share of the exact top-n keys the IVF index returns (over 50 queries). The memory's pull is a softmax "
            "(temperature 100) over the top keys, so what matters is the share of that softmax weight on keys the index found, "
            "and how close the pulled vector is to the exact one. Resident memory: `anon` counts the process's own allocations; "
            "the pages of the memory-mapped arrays it read (every key, for the exact search) come on top and can be dropped by the OS.",
        ]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")
    if args.folder is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
