"""Throughput of the base model on a local Dask cluster against one process, from an empty cache.

The texts are the published Uber chunks' sentences (6+ words), embedded as queries, which is what a
sentence memory and pseudo-queries cost. Each setting starts from an empty cache:

- one process (``embed_texts``, the offline model with all cores);
- a ``LocalCluster`` of 1 worker process with 2 threads for the model;
- a ``LocalCluster`` of 2 worker processes with 1 thread each.

Run::

    python benchmarks/embed_cluster.py --output benchmarks/results/embed_cluster
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.cluster import embed_on_cluster
from adapterkit.data.documents import chunk_sentences
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.embeddings import OnnxBGEEmbedding
from adapterkit.evaluation.runner import provenance


def main() -> None:
    from dask.distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000, help="sentences embedded per setting")
    parser.add_argument("--batch", type=int, default=64, help="texts per task")
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    _, uber = load_qa_datasets("published")
    texts = list(dict.fromkeys(s for t in uber.corpus.values() for s in chunk_sentences(t)))[: args.texts]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="adapterkit-cluster-"))

    start = time.perf_counter()
    reference = embed_texts(OnnxBGEEmbedding(), texts, "query", cache=EmbeddingCache(work / "one"))
    rows.append({"setting": "one process (2 threads)", "workers": 0, "seconds": round(time.perf_counter() - start, 1)})
    for workers, threads in ((1, 2), (2, 1)):
        cache = EmbeddingCache(work / f"cluster-{workers}")
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            source = functools.partial(OnnxBGEEmbedding, num_threads=threads)
            start = time.perf_counter()
            counts = embed_on_cluster(client, source, texts, kind="query", cache=cache, batch_size=args.batch)
            seconds = time.perf_counter() - start
        assert counts["embedded"] == len(texts), counts  # every vector came from the workers
        same = np.allclose(embed_texts(OnnxBGEEmbedding(), texts, "query", cache=cache), reference, atol=1e-5)
        rows.append(
            {
                "setting": f"LocalCluster: {workers} worker(s) x {threads} thread(s)",
                "workers": workers,
                "seconds": round(seconds, 1),
                "batches": counts["batches"],
                "same_vectors": bool(same),
            }
        )
    for row in rows:
        row["texts_per_s"] = round(len(texts) / row["seconds"], 1)
    result = {"texts": len(texts), "batch": args.batch, "rows": rows, "provenance": provenance()}
    print(json.dumps(result, indent=2))
    if args.output:
        Path(f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["| setting | seconds | texts/s | same vectors |", "|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['seconds']} | {r['texts_per_s']} | {r.get('same_vectors', '')} |" for r in rows]
        Path(f"{args.output}.md").write_text(
            f"# Embedding on a local Dask cluster ({len(texts)} Uber sentences as queries)\n\n"
            f"`python benchmarks/embed_cluster.py --texts {args.texts} --batch {args.batch} --output {args.output}`\n\n"
            + "\n".join(lines)
            + "\n"
        )


if __name__ == "__main__":
    main()
