"""Scale on synthetic data: exact search over up to 1,000,000 × 384 vectors, and training on 100,000 pairs.

The vectors are random (this measures speed and memory, not quality). ``exact_search`` is the core
of ``evaluate``: chunked over queries and documents, so its working memory is bounded by the chunk
sizes, not by the corpus. Training runs the real engine on pairs served from the embedding cache;
the "model" is a seeded random projection standing in for a base model, never a real one.

    python benchmarks/scale.py [--sizes 100000 300000 1000000] [--queries 10000] [--pairs 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingCache,
    EmbeddingQAFinetuneDataset,
)
from adapterkit.evaluation.runner import provenance
from adapterkit.metrics import exact_search


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class SyntheticEmbedding(BaseEmbedding):
    """Text → seeded random unit vector (speed benchmark only; carries no meaning)."""

    model_name: str = "synthetic-random-384"

    def _vec(self, text: str) -> List[float]:
        v = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=384)
        return (v / np.linalg.norm(v)).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._vec("q" + query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--output", default="benchmarks/results/scale.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {"search": [], "training": {}}

    queries = rng.standard_normal((args.queries, 384), dtype=np.float32)
    for n in args.sizes:
        docs = rng.standard_normal((n, 384), dtype=np.float32)
        relevant = [[int(i)] for i in rng.integers(0, n, size=args.queries)]
        t0 = time.perf_counter()
        exact_search(queries, docs, 10, relevant)
        secs = time.perf_counter() - t0
        row = {
            "corpus": n,
            "queries": args.queries,
            "seconds": round(secs, 2),
            "us_per_query_per_100k_docs": round(secs / args.queries / (n / 1e5) * 1e6, 2),
            "corpus_gib": round(docs.nbytes / 2**30, 3),
            "peak_rss_gib": round(peak_rss_gib(), 2),
        }
        results["search"].append(row)
        print(row, flush=True)
        del docs

    # Training: a dataset of `pairs` queries over pairs/2 chunks, embedded once into a fresh cache.
    n_docs = args.pairs // 2
    dataset = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"question {i}" for i in range(args.pairs)},
        corpus={f"d{j}": f"chunk {j}" for j in range(n_docs)},
        relevant_docs={f"q{i}": [f"d{i % n_docs}"] for i in range(args.pairs)},
    )
    cache = EmbeddingCache(tempfile.mkdtemp(prefix="adapterkit-scale-"))
    model = SyntheticEmbedding(embed_batch_size=2048)
    kwargs = dict(cache=cache, show_progress=False, model_output_path=tempfile.mkdtemp(), negatives="in_batch", batch_size=256, epochs=1)
    t0 = time.perf_counter()
    EmbeddingAdapterFinetuneEngine(dataset, model, **kwargs)
    results["training"]["first_embedding_into_cache_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    engine = EmbeddingAdapterFinetuneEngine(dataset, model, **kwargs)
    results["training"]["engine_from_warm_cache_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    engine.finetune()
    results["training"].update(
        {
            "pairs": args.pairs,
            "epochs": 1,
            "batch_size": 256,
            "finetune_s": round(time.perf_counter() - t0, 2),
            "peak_rss_gib": round(peak_rss_gib(), 2),
        }
    )
    print(results["training"])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "provenance": provenance()}, indent=2))


if __name__ == "__main__":
    main()
