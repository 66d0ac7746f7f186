"""Half-precision database memories (pgvector ``halfvec``) against single precision, on the public benchmarks.

For each benchmark (the walkthrough's Uber 10-K questions, BEIR SciFact), the defaults are trained on
its training side with its test corpus as the searched corpus (the offline default model, as the
walkthrough runs). Every memory the run built is then written into a ``PgMemory`` on a ``LocalPostgres``
server twice, with ``half=False`` and ``half=True``, each with an IVFFlat index of one list (so that every
lookup is exact and only the precision differs). Measured on the test questions:

- hit@5 and MRR@5 of the served queries (adapter, then the memories) with the memories local
  (``CorpusMemory``), in the database in single precision, and in half precision;
- the share of each query's top keys the half-precision lookup finds (recall@top_k against the
  single-precision lookup), and the largest difference of a served query vector;
- the memories' size in the database either way.

Run::

    python benchmarks/half_precision.py --output benchmarks/results/half_precision
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from cross_model import scores  # hit@5, MRR@5 and nDCG@10, ties ranked as evaluate ranks them

from adapterkit import EmbeddingAdapterFinetuneEngine
from adapterkit.cache import embed_texts
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.embeddings import resolve_embed_model
from adapterkit.evaluation.runner import provenance
from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.memory.pg_memory import PgMemory, PgMemoryWriter
from adapterkit.metrics import unit_rows
from adapterkit.query_vectors import adapt_queries
from adapterkit.stores.postgres import LocalPostgres

K = 5  # hit@5 and MRR@5, as the other public-benchmark tables


def to_database(url: str, name: str, memory: CorpusMemory, half: bool) -> PgMemory:
    """``memory``'s chunks and keys as a ``PgMemory``, exact lookups (one IVFFlat list)."""
    options = {"weight": memory.weight, "temperature": memory.temperature, "top_k": memory.top_k, "max_keys": memory.max_keys}
    with PgMemoryWriter(url, name, memory.dim, key_dim=memory.key_dim, index="ivfflat", lists=1, half=half, **options) as writer:
        writer.add(memory.chunk_ids, np.asarray(memory.chunks), np.asarray(memory.keys), np.asarray(memory.owner), memory.chunk_hash)
    return PgMemory(url, name)


def run(name: str, pg: LocalPostgres, work: Path) -> Dict[str, Any]:
    train, test = load_qa_datasets("published" if name == "uber" else "scifact")
    base = resolve_embed_model("default")
    engine = EmbeddingAdapterFinetuneEngine(train, base, unlabeled_corpus=test.corpus, model_output_path=work / name, show_progress=False)
    engine.finetune()
    ids = list(test.corpus)
    position = {d: i for i, d in enumerate(ids)}
    relevant = [[position[d] for d in test.relevant_docs[q] if d in position] for q in test.queries]
    docs = unit_rows(embed_texts(base, [test.corpus[d] for d in ids], "text"))
    q = embed_texts(base, list(test.queries.values()), "query")
    local = list(engine.memories.values())
    row: Dict[str, Any] = {"benchmark": name, "queries": len(q), "memories": {m: len(v.keys) for m, v in engine.memories.items()}}
    row["base"] = scores(q, docs, relevant)
    served = {"local": adapt_queries(engine.model, q, local)}
    row["local"] = scores(served["local"], docs, relevant)
    found: Dict[bool, List[List[List[str]]]] = {}
    for half in (False, True):
        label = "half" if half else "single"
        held = [to_database(pg.url(), f"{name}_{m}_{label}", v, half) for m, v in engine.memories.items()]
        served[label] = adapt_queries(engine.model, q, held)
        row[label] = scores(served[label], docs, relevant)
        sizes = " + ".join(f"pg_total_relation_size('{m.name}') + pg_total_relation_size('{m.name}__keys')" for m in held)
        row[f"{label}_mb"] = round(int(pg.psql(f"SELECT {sizes};").split()[2]) / 2**20, 2)
        found[half] = [m.lookup(q)[1] for m in held]
        for m in held:
            m.close()
    shares = [
        len(set(map(tuple, enumerate_keys(h))) & set(map(tuple, enumerate_keys(s)))) / max(1, len(s))
        for hm, sm in zip(found[True], found[False])
        for h, s in zip(hm, sm)
    ]
    row["half_key_recall"] = round(float(np.mean(shares)), 4)
    row["half_max_query_difference"] = float(np.abs(served["half"] - served["single"]).max())
    row["single_max_query_difference_from_local"] = float(np.abs(served["single"] - served["local"]).max())
    return row


def enumerate_keys(chunk_ids: List[str]) -> List[tuple]:
    """A lookup's chunk ids as (chunk id, how many times before) pairs: a chunk found through two keys counts twice."""
    seen: Dict[str, int] = {}
    out = []
    for c in chunk_ids:
        out.append((c, seen.get(c, 0)))
        seen[c] = seen.get(c, 0) + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adapterkit-half-"))
    try:
        with LocalPostgres(work / "pg") as pg:
            rows = [run(name, pg, work) for name in ("uber", "scifact")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"rows": rows, "provenance": provenance()}
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            "# Half-precision database memories against single precision",
            "",
            f"`python benchmarks/half_precision.py --output {args.output}`",
            "",
            f"| benchmark | base MRR@{K} | local memories | database, single | database, half | half: top keys found | "
            "size single / half, MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            mrr = [r[side][f"mrr@{K}"] for side in ("base", "local", "single", "half")]
            lines.append(
                f"| {r['benchmark']} | " + " | ".join(f"{m:.4f}" for m in mrr) + f" | {r['half_key_recall']:.2%} | "
                f"{r['single_mb']} / {r['half_mb']} |"
            )
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
