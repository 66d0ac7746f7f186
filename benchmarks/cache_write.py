"""How fast one process writes landed vectors into the embedding cache: the bound on a cluster's rate.

``embed_on_cluster`` runs the model on the workers, and this process puts each landed batch into the
SQLite embedding cache (``EmbeddingCache.put_many``). N workers embed N times as fast as one only while
this process keeps up. Written here: ``--vectors`` 384-d float32 vectors, ``--batch`` per call, keys as
the cache makes them, into an empty cache file; the result is vectors per second and the file's size.
Run::

    python benchmarks/cache_write.py --output benchmarks/results/cache_write
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from adapterkit.cache import EmbeddingCache
from adapterkit.evaluation.runner import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=128, help="vectors per put_many call (embed_on_cluster's default batch)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="adapterkit-cachewrite-") as work:
        cache = EmbeddingCache(Path(work) / "cache")
        block = rng.standard_normal((args.batch, args.dim)).astype(np.float32)
        start = time.perf_counter()
        for first in range(0, args.vectors, args.batch):
            n = min(args.batch, args.vectors - first)
            cache.put_many("bench-model", {EmbeddingCache.key("query", f"sentence {first + i}"): block[i] for i in range(n)})
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(work).rglob("*") if p.is_file())
    result = {
        "vectors": args.vectors,
        "batch": args.batch,
        "dim": args.dim,
        "seconds": round(seconds, 1),
        "vectors_per_s": round(args.vectors / seconds),
        "cache_mb": round(size / 2**20, 1),
        "provenance": provenance(),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n")
        Path(f"{args.output}.md").write_text(
            f"# Writing vectors into the embedding cache (one process)\n\n"
            f"`python benchmarks/cache_write.py --vectors {args.vectors} --batch {args.batch} --output {args.output}`\n\n"
            f"| vectors | batch | seconds | vectors/s | cache size |\n|---|---|---|---|---|\n"
            f"| {args.vectors} | {args.batch} | {result['seconds']} | {result['vectors_per_s']} | {result['cache_mb']} MB |\n"
        )


if __name__ == "__main__":
    main()
