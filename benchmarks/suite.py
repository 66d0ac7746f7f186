"""The public benchmark suite: (training questions, target corpus) pairs, every recipe against base.

Pairs (training side -> target questions over the target corpus):

- ``lyft->uber``: LlamaIndex's walkthrough (published Lyft train and Uber val questions);
- ``scifact->scifact``: BEIR SciFact train claims -> SciFact test claims, over the 5,183 abstracts;
- ``lyft->scifact`` and ``scifact->uber``: training questions from another domain than the target.

Each recipe trains on the training side only (and, where it says so, on the target corpus without
its labels), then answers the target questions. Reported per pair: hit@5 and MRR@5 (the
walkthrough's), nDCG@10 (BEIR's), and for nDCG@10 and MRR@5 the change against base with a paired
bootstrap 95% interval over the target questions. Run::

    python benchmarks/suite.py --output benchmarks/results/suite            # every pair and recipe
    python benchmarks/suite.py --pairs lyft-uber --recipes base defaults    # a part of it
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple


from adapterkit import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset, evaluate, resolve_embed_model
from adapterkit.compare import per_query
from adapterkit.metrics import paired_bootstrap
from adapterkit.nodes import load_qa_datasets
from adapterkit.nudge import nudge_documents
from adapterkit.trainer import LLAMAINDEX_RECIPE

Pair = Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]


def pairs() -> Dict[str, Callable[[], Pair]]:
    def lyft_uber() -> Pair:
        return load_qa_datasets("published")

    def scifact() -> Pair:
        return load_qa_datasets("scifact")

    return {
        "lyft-uber": lyft_uber,
        "scifact-scifact": scifact,
        "lyft-scifact": lambda: (lyft_uber()[0], scifact()[1]),
        "scifact-uber": lambda: (scifact()[0], lyft_uber()[1]),
    }


def engine_recipe(target_corpus: bool, **options: Any) -> Callable:
    def run(train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path) -> Tuple[Any, Optional[dict], dict]:
        engine = EmbeddingAdapterFinetuneEngine(train, model, model_output_path=folder, show_progress=False,
                                                unlabeled_corpus=target.corpus if target_corpus else None, **options)
        engine.finetune()
        return engine.get_finetuned_model(), None, {"best_epoch": engine.best_epoch}
    return run


def nudge_recipe(train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path) -> Tuple[Any, Optional[dict], dict]:
    if set(train.corpus) != set(target.corpus):
        raise LookupError("NUDGE edits the vectors of the documents its training questions answer: the target corpus must be that corpus.")
    result = nudge_documents(train, model)
    return model, result.doc_vectors, {"gamma": result.gamma, "edited": result.edited}


RECIPES: Dict[str, Callable] = {
    "walkthrough recipe (4 epochs)": engine_recipe(False, epochs=4, **LLAMAINDEX_RECIPE),
    "defaults": engine_recipe(False),
    "defaults + target corpus": engine_recipe(True),
    "defaults + target corpus, no memory": engine_recipe(True, corpus_memory=False),
    "defaults + target corpus, no guard": engine_recipe(True, guard=False),
    "defaults + target corpus, no guard, no memory": engine_recipe(True, guard=False, corpus_memory=False),
    "target corpus memory alone (no training)": engine_recipe(True, epochs=0),
    "NUDGE-N (edits documents)": nudge_recipe,
}


def run_pair(name: str, pair: Pair, recipes: Dict[str, Callable], model: Any, work: Path) -> list:
    train, target = pair
    base = per_query(evaluate(target, model, top_k=10))
    rows = [{"pair": name, "recipe": "base", **{k: float(v.mean()) for k, v in base.items()}}]
    for recipe, run in recipes.items():
        t0 = time.perf_counter()
        try:
            embed_model, doc_vectors, info = run(train, target, model, work / f"{name}-{abs(hash(recipe))}")
        except LookupError as exc:
            print(f"[{name}] {recipe}: skipped ({exc})", flush=True)
            continue
        got = per_query(evaluate(target, embed_model, top_k=10, doc_vectors=doc_vectors))
        row = {"pair": name, "recipe": recipe, **{k: float(v.mean()) for k, v in got.items()}, **info,
               "seconds": round(time.perf_counter() - t0, 1)}
        for metric in ("ndcg@10", "mrr@5"):
            diff, low, high = paired_bootstrap(base[metric], got[metric])
            row[f"Δ{metric}"], row[f"Δ{metric} 95% interval"] = diff, (low, high)
        rows.append(row)
        low, high = row["Δndcg@10 95% interval"]
        print(f"[{name}] {recipe}: nDCG@10 {row['ndcg@10']:.4f} (Δ {row['Δndcg@10']:+.4f} [{low:+.4f}, {high:+.4f}]) "
              f"MRR@5 {row['mrr@5']:.4f} (Δ {row['Δmrr@5']:+.4f}) {info} {row['seconds']} s", flush=True)
    return rows


def markdown(rows: list) -> str:
    lines = []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        lines += [f"### {pair}", "", "| recipe | hit@5 | MRR@5 | nDCG@10 | ΔnDCG@10 [95% interval] | ΔMRR@5 [95% interval] | notes |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["pair"] == pair):
            delta = lambda m: "" if f"Δ{m}" not in r else f"{r[f'Δ{m}']:+.4f} [{r[f'Δ{m} 95% interval'][0]:+.4f}, {r[f'Δ{m} 95% interval'][1]:+.4f}]"  # noqa: E731
            notes = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("pair", "recipe", "hit@5", "mrr@5", "ndcg@10") and not k.startswith("Δ"))
            lines.append(f"| {r['recipe']} | {r['hit@5']:.4f} | {r['mrr@5']:.4f} | {r['ndcg@10']:.4f} | {delta('ndcg@10')} | {delta('mrr@5')} | {notes} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=list(pairs()), help=f"of {list(pairs())}")
    parser.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: all)")
    parser.add_argument("--embed", default="default")
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    recipes = {k: v for k, v in RECIPES.items() if args.recipes is None or k in args.recipes}
    model = resolve_embed_model(args.embed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adapterkit-suite-") as work:
        for name in args.pairs:
            rows += run_pair(name, pairs()[name](), recipes, model, Path(work))
    table = markdown(rows)
    print(table)
    if args.output:
        command = "python benchmarks/suite.py" + (f" --pairs {' '.join(args.pairs)}" if args.pairs != list(pairs()) else "")
        Path(args.output + ".md").write_text(f"# Benchmark suite\n\n`{command}`\n\n" + table)
        Path(args.output + ".json").write_text(json.dumps(rows, indent=2, default=list) + "\n")


if __name__ == "__main__":
    main()
