"""Upgrading the query model without re-indexing: NEW-model queries answered from an OLD-model index.

For each benchmark (``uber``: Lyft questions train, the published Uber questions test over the Uber
10-K's chunks; ``scifact``: SciFact train claims, test claims over its 5,183 abstracts) and each
direction between the two offline models (MiniLM and bge-small, both 384-d), it scores:

- OLD only: OLD embeds queries and documents (what is served today);
- NEW everywhere: NEW re-embeds the whole corpus (the upgrade that costs a re-index);
- the start map alone (``fit_linear_map``) fitted on the run's query texts plus 0, 1%, 5%, 10%, 20%,
  500 and 2,000 chunks of the corpus embedded by both models;
- the map alone fitted on generic text as well: the sentences of the other benchmark's corpus (the
  SciFact abstracts' for Uber; the Lyft and Uber 10-Ks' for SciFact), which no run here trains on;
- the map refined by the engine's defaults (``index_model=OLD``, ``map_sample`` 0.1): labelled
  questions, the target corpus's pseudo-queries and its sentence memory; no document re-embedded;
- re-embed and adapt: NEW everywhere plus the same defaults (what a user who re-indexes would run);
- a diagnostic, not a method: the linear map fitted on the test questions themselves and every chunk,
  the most any linear query map could recover.

Each row gives MRR@5 (hit@5 and nDCG@10 too), its share of both ceilings' MRR@5 (NEW everywhere;
re-embed and adapt), the corpus chunks NEW embeds, and microseconds per query for the map. Repeat:

    python benchmarks/cross_model.py --output benchmarks/results/cross_model
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import torch

from adapterkit import EmbeddingAdapterFinetuneEngine, resolve_embed_model
from adapterkit.cache import embed_texts
from adapterkit.cross_model import choose_sample, fit_linear_map
from adapterkit.data.documents import chunk_sentences
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.evaluation.runner import provenance
from adapterkit.metrics import exact_search, metrics_at_k, unit_rows
from adapterkit.query_vectors import adapt_queries

SAMPLES = [0, 0.01, 0.05, 0.1, 0.2, 500, 2000]  # chunks both models embed for the map: shares of the corpus, or counts
MODELS = {"minilm": "MiniLM-L6", "default": "bge-small"}


def scores(queries: np.ndarray, docs: np.ndarray, relevant: List[List[int]]) -> Dict[str, float]:
    _, _, ranks = exact_search(queries, docs, 10, relevant)
    at5, at10 = metrics_at_k(ranks, 5), metrics_at_k(ranks, 10)
    return {"hit@5": float(at5["is_hit"].mean()), "mrr@5": float(at5["mrr"].mean()), "ndcg@10": float(at10["ndcg"].mean())}


def generic_sentences(name: str) -> List[str]:
    """Sentences no run of ``name`` trains on: the other benchmark's corpus, split as the sentence memory splits."""
    if name == "uber":
        corpora = [load_qa_datasets("scifact")[1].corpus]
    else:
        corpora = [d.corpus for d in load_qa_datasets("published")]
    return list(dict.fromkeys(s for corpus in corpora for text in corpus.values() for s in chunk_sentences(text)))


def setting(name: str, old_spec: str, new_spec: str) -> SimpleNamespace:
    """A benchmark's data and both models' vectors of its test side: chunks (OLD's as unit rows) and test questions."""
    train, test = load_qa_datasets("published" if name == "uber" else "scifact")
    old, new = resolve_embed_model(old_spec), resolve_embed_model(new_spec)
    ids = list(test.corpus)
    position = {d: i for i, d in enumerate(ids)}
    questions = list(test.queries.values())
    return SimpleNamespace(
        train=train,
        test=test,
        old=old,
        new=new,
        ids=ids,
        position=position,
        relevant=[[position[d] for d in test.relevant_docs[q] if d in position] for q in test.queries],
        questions=questions,
        docs_old=unit_rows(embed_texts(old, [test.corpus[d] for d in ids], "text", show_progress=True)),
        docs_new=embed_texts(new, [test.corpus[d] for d in ids], "text", show_progress=True),  # as embedded: a map is fitted on it
        q_old=embed_texts(old, questions, "query"),
        q_new=embed_texts(new, questions, "query"),
    )


def run(name: str, old_spec: str, new_spec: str, work: Path) -> List[Dict]:
    b = setting(name, old_spec, new_spec)
    train, test, old, new, ids, position, relevant = b.train, b.test, b.old, b.new, b.ids, b.position, b.relevant
    questions, docs_old, docs_new, q_old, q_new = b.questions, b.docs_old, unit_rows(b.docs_new), b.q_old, b.q_new
    full = scores(q_new, docs_new, relevant)
    rows = [
        {"method": "OLD only", **scores(q_old, docs_old, relevant), "new_chunks": 0},
        {"method": "NEW everywhere (re-embed the corpus)", **full, "new_chunks": len(ids)},
    ]

    # The map alone, on the texts a refined run would pair: its questions and pseudo-queries, plus sampled chunks.
    engine = EmbeddingAdapterFinetuneEngine(
        train,
        new,
        index_model=old,
        unlabeled_corpus=test.corpus,
        cache=None,
        model_output_path=work / f"{name}-{old_spec}-{new_spec}",
        show_progress=False,
    )
    texts = list(dict.fromkeys(engine.map_texts))  # the training query texts (held-out chunks' left out)
    pair_new, pair_old = embed_texts(new, texts, "query"), embed_texts(old, texts, "query")
    for size in SAMPLES:
        chosen = choose_sample(ids, size, 0) if size else []
        x = np.concatenate([pair_new, embed_texts(new, [test.corpus[d] for d in chosen], "text")]) if chosen else pair_new
        y = np.concatenate([pair_old, docs_old[[position[d] for d in chosen]]]) if chosen else pair_old
        start = time.perf_counter()
        layer = fit_linear_map(x, y)
        fit_s = time.perf_counter() - start
        label = f"{size:.0%}" if isinstance(size, float) else f"{size} chunks"
        rows.append(
            {
                "method": f"map alone: {len(texts)} query texts + {label} of the corpus",
                "new_chunks": len(chosen),
                **scores(adapt_queries(layer, q_new, out_dim=docs_old.shape[1]), docs_old, relevant),
                "fit_s": round(fit_s, 3),
            }
        )

    generic = generic_sentences(name)
    g_new, g_old = embed_texts(new, generic, "query", show_progress=True), embed_texts(old, generic, "query", show_progress=True)
    chosen = choose_sample(ids, 0.1, 0)
    for label, x, y in (
        (f"generic text ({len(generic)} sentences)", g_new, g_old),
        (
            f"generic text ({len(generic)} sentences) + {len(texts)} query texts + 10% of the corpus",
            np.concatenate([g_new, pair_new, embed_texts(new, [test.corpus[d] for d in chosen], "text")]),
            np.concatenate([g_old, pair_old, docs_old[[position[d] for d in chosen]]]),
        ),
    ):
        layer = fit_linear_map(x, y)
        rows.append(
            {
                "method": f"map alone: {label}",
                "new_chunks": len(chosen) if "corpus" in label else 0,
                **scores(adapt_queries(layer, q_new, out_dim=docs_old.shape[1]), docs_old, relevant),
            }
        )
    oracle = fit_linear_map(np.concatenate([q_new, b.docs_new]), np.concatenate([q_old, docs_old]))
    rows.append(
        {
            "method": "diagnostic: a linear map fitted on the test questions and every chunk",
            "new_chunks": len(ids),
            **scores(adapt_queries(oracle, q_new, out_dim=docs_old.shape[1]), docs_old, relevant),
        }
    )

    adapted = EmbeddingAdapterFinetuneEngine(
        train, new, unlabeled_corpus=test.corpus, cache=None, model_output_path=work / f"{name}-{new_spec}-adapted", show_progress=False
    )
    adapted.finetune()
    ceiling = scores(adapt_queries(adapted.model, q_new, list(adapted.memories.values()), out_dim=docs_new.shape[1]), docs_new, relevant)
    rows.insert(2, {"method": "re-embed and adapt: NEW everywhere + the defaults", **ceiling, "new_chunks": len(ids)})

    engine.finetune()
    served = adapt_queries(engine.model, q_new, list(engine.memories.values()), out_dim=docs_old.shape[1])
    rows.append(
        {
            "method": f"map refined (defaults: {engine.map_info['sample_chunks']} chunks, memories {sorted(engine.memories)})",
            **scores(served, docs_old, relevant),
            "new_chunks": engine.map_info["sample_chunks"],
            "best_epoch": engine.best_epoch,
        }
    )
    many = torch.as_tensor(np.tile(q_new, (max(1, 10_000 // len(q_new)), 1)), dtype=torch.float32)
    with torch.no_grad():
        start = time.perf_counter()
        engine.model(many)
        us = (time.perf_counter() - start) / len(many) * 1e6
    for row in rows:
        row["recovered"] = round(row["mrr@5"] / full["mrr@5"], 4)
        row["recovered_of_adapted"] = round(row["mrr@5"] / ceiling["mrr@5"], 4)
        row.update(benchmark=name, old=MODELS[old_spec], new=MODELS[new_spec], corpus_chunks=len(ids), queries=len(questions))
    rows[-1]["map_us_per_query"] = round(us, 2)
    return rows


def markdown(rows: List[Dict]) -> str:
    lines = [
        "| benchmark | OLD index | NEW queries | method | NEW embeds (chunks) | hit@5 | MRR@5 | nDCG@10 | share of re-embedding's MRR@5 "
        "| share of re-embed and adapt's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['old']} | {r['new']} | {r['method']} | {r['new_chunks']} of {r['corpus_chunks']} | "
            f"{r['hit@5']:.4f} | {r['mrr@5']:.4f} | {r['ndcg@10']:.4f} | {r['recovered']:.1%} | {r['recovered_of_adapted']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", default=["uber", "scifact"], choices=["uber", "scifact"])
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="adapterkit-cross-") as work:
        for name in args.benchmarks:
            for old, new in [("minilm", "default"), ("default", "minilm")]:
                rows += run(name, old, new, Path(work))
                print(markdown([r for r in rows if r["benchmark"] == name and r["old"] == MODELS[old]]), flush=True)
    if args.output:
        Path(f"{args.output}.json").write_text(json.dumps({"provenance": provenance(), "rows": rows}, indent=2))
        Path(f"{args.output}.md").write_text(
            f"# NEW-model queries over an OLD-model index\n\n"
            f"`python benchmarks/cross_model.py --benchmarks {' '.join(args.benchmarks)} --output {args.output}`"
            "\n\n" + markdown(rows)
        )


if __name__ == "__main__":
    main()
