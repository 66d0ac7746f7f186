"""LlamaIndex's EmbeddingAdapterFinetuneEngine vs adapterkit's, side by side in one process.

Same data (published Lyft train set), same base model (offline bge-small-en-v1.5, float32), same
epochs. Prints wall time of each and the ratios, and compares ``evaluate`` on the Uber val set with
the walkthrough's per-query ``VectorStoreIndex`` evaluation, both on a warm embedding cache.

    make bench                      # installs the [bench] extra, runs this with defaults
    python benchmarks/bench_engines.py --epochs 4 [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import TextNode

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingCache,
    EmbeddingQAFinetuneDataset,
    evaluate,
)
from adapterkit.cache import embed_texts
from adapterkit.data.files import get_file
from adapterkit.embeddings import OnnxBGEEmbedding
from adapterkit.evaluation.runner import provenance


class CachedEmbedding(BaseEmbedding):
    """Any base model read through adapterkit's cache, for the walkthrough's evaluation on a warm cache."""

    _base: BaseEmbedding = PrivateAttr()
    _cache: EmbeddingCache = PrivateAttr()

    def __init__(self, base: BaseEmbedding, cache: EmbeddingCache) -> None:
        super().__init__(model_name=base.model_name)
        self._base, self._cache = base, cache

    def _get_query_embedding(self, query: str) -> List[float]:
        return embed_texts(self._base, [query], "query", cache=self._cache)[0].tolist()

    def _get_text_embedding(self, text: str) -> List[float]:
        return embed_texts(self._base, [text], "text", cache=self._cache)[0].tolist()

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return embed_texts(self._base, texts, "text", cache=self._cache).tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


def walkthrough_evaluate(dataset: EmbeddingQAFinetuneDataset, embed_model: BaseEmbedding, top_k: int = 5) -> pd.DataFrame:
    """The walkthrough's evaluation: a VectorStoreIndex, then one retriever call per query."""
    nodes = [TextNode(id_=i, text=t) for i, t in dataset.corpus.items()]
    retriever = VectorStoreIndex(nodes, embed_model=embed_model).as_retriever(similarity_top_k=top_k)
    rows = []
    for qid, query in dataset.queries.items():
        ids = [n.node.node_id for n in retriever.retrieve(query)]
        expected = dataset.relevant_docs[qid][0]
        hit = expected in ids
        rows.append({"is_hit": hit, "mrr": 1 / (ids.index(expected) + 1) if hit else 0.0})
    return pd.DataFrame(rows)


def subset(ds: EmbeddingQAFinetuneDataset, limit: int | None) -> EmbeddingQAFinetuneDataset:
    if not limit:
        return ds
    qids = list(ds.queries)[:limit]
    docs = {ds.relevant_docs[q][0] for q in qids}
    return EmbeddingQAFinetuneDataset(
        queries={q: ds.queries[q] for q in qids},
        corpus={d: t for d, t in ds.corpus.items() if d in docs},
        relevant_docs={q: ds.relevant_docs[q] for q in qids},
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="first N training queries (default: all 668)")
    parser.add_argument("--output", default="benchmarks/results/bench_engines.json")
    parser.add_argument("--evaluate-only", action="store_true", help="skip the engines, time only the evaluations")
    args = parser.parse_args()

    train = subset(EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json")), args.limit)
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    model = OnnxBGEEmbedding()
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-bench-"))
    results = {"epochs": args.epochs, "train_queries": len(train.queries), "train_chunks": len(train.corpus)}

    cache = EmbeddingCache(tmp / "cache")  # a fresh cache: the cold run embeds everything once
    if not args.evaluate_only:
        results.update(compare_engines(train, model, args.epochs, tmp, cache))

    # Evaluation on the Uber val set, both on a warm cache; ours is short, so take the median of 5.
    evaluate(val, model, cache=cache)  # warms the cache
    results["evaluate_s"] = float(np.median([timed(lambda: evaluate(val, model, cache=cache)) for _ in range(5)]))
    results["walkthrough_evaluate_s"] = timed(lambda: walkthrough_evaluate(val, CachedEmbedding(model, cache)))
    results["evaluate_speedup"] = results["walkthrough_evaluate_s"] / results["evaluate_s"]

    for key, value in results.items():
        print(f"{key:28s} {value:10.3f}" if isinstance(value, float) else f"{key:28s} {value:>10}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "provenance": provenance()}, indent=2))


def compare_engines(train: EmbeddingQAFinetuneDataset, model: BaseEmbedding, epochs: int, tmp: Path, cache: EmbeddingCache) -> dict:
    """Wall time of LlamaIndex's engine, ours from a cold cache, ours warm, and embedding each text once."""
    from llama_index.finetuning import (
        EmbeddingAdapterFinetuneEngine as LlamaIndexEngine,
    )
    from llama_index.finetuning import EmbeddingQAFinetuneDataset as LlamaIndexDataset

    results = {}
    # Reference: embed every unique training text once, straight through the model.
    queries = list(dict.fromkeys(train.queries.values()))
    chunks = list(dict.fromkeys(train.corpus.values()))
    results["embed_each_text_once_s"] = timed(lambda: (model._get_query_embeddings(queries), model._get_text_embeddings(chunks)))

    li_engine = LlamaIndexEngine(LlamaIndexDataset(**train.model_dump()), model, epochs=epochs, model_output_path=str(tmp / "li"))
    results["llamaindex_s"] = timed(li_engine.finetune)

    def ours() -> None:
        engine = EmbeddingAdapterFinetuneEngine(train, model, epochs=epochs, model_output_path=tmp / "ak", cache=cache, show_progress=False)
        engine.finetune()

    results["adapterkit_cold_s"] = timed(ours)
    results["adapterkit_warm_s"] = timed(ours)
    results["speedup_cold"] = results["llamaindex_s"] / results["adapterkit_cold_s"]
    results["speedup_warm"] = results["llamaindex_s"] / results["adapterkit_warm_s"]
    results["cold_over_embed_once"] = results["adapterkit_cold_s"] / results["embed_each_text_once_s"]
    return results


if __name__ == "__main__":
    main()
