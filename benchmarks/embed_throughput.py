"""Embedding throughput of the offline default: float32 (batched or one text per call) against the int8 graph.

Texts per second on the walkthrough's Uber chunks and questions, each measured through ``embed_texts``
with an empty cache (so every text reaches the model), best of ``--repeats`` runs. Run::

    python benchmarks/embed_throughput.py --chunks 120 --queries 400 --output benchmarks/results/embed_throughput.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from adapterkit import EmbeddingCache, EmbeddingQAFinetuneDataset, embed_texts
from adapterkit.data.files import get_file
from adapterkit.embeddings import OnnxBGEEmbedding
from adapterkit.evaluation.runner import provenance

SETTINGS = {
    "float32, batched (default)": dict(precision="float32", embed_batch_size=32),
    "float32, one text per call": dict(precision="float32", embed_batch_size=1),
    "int8, one text per call (previous default)": dict(precision="int8", embed_batch_size=1),
}


def texts_per_second(model: OnnxBGEEmbedding, texts: list, kind: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            embed_texts(model, texts, kind, cache=EmbeddingCache(folder), batch_size=128)
            best = min(best, time.perf_counter() - start)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=120, help="Uber chunks embedded as documents")
    parser.add_argument("--queries", type=int, default=400, help="Uber questions embedded as queries")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args()
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    chunks, queries = list(val.corpus.values())[: args.chunks], list(val.queries.values())[: args.queries]
    rows = []
    for name, options in SETTINGS.items():
        model = OnnxBGEEmbedding(**options)
        row = {
            "setting": name,
            "chunks/s": round(texts_per_second(model, chunks, "text", args.repeats), 2),
            "queries/s": round(texts_per_second(model, queries, "query", args.repeats), 2),
        }
        rows.append(row)
        print(f"{name:45s} {row['chunks/s']:8.2f} chunks/s {row['queries/s']:8.2f} queries/s", flush=True)
    result = {
        "command": "python benchmarks/embed_throughput.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "output" and v is not None),
        "provenance": provenance(),
        "rows": rows,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
