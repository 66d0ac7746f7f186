"""The public benchmark suite: (training questions, target corpus) pairs, every recipe against base.

Pairs (training side -> target questions over the target corpus):

- ``lyft-uber``: LlamaIndex's walkthrough (published Lyft train and Uber val questions);
- ``scifact-scifact``: BEIR SciFact train claims -> SciFact test claims, over the 5,183 abstracts;
- ``lyft-scifact`` and ``scifact-uber``: training questions from another domain than the target.

Each recipe trains on the training side only (and, where it says so, on the target corpus without
its labels), then answers the target questions. Reported per pair: hit@5 and MRR@5 (the
walkthrough's), nDCG@10 (BEIR's), and for nDCG@10 and MRR@5 the change against base with a paired
bootstrap 95% interval over the target questions. Run::

    python benchmarks/suite.py --output benchmarks/results/suite            # every pair and recipe
    python benchmarks/suite.py --pairs lyft-uber --recipes defaults         # a part of it
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict, Tuple

from adapterkit import EmbeddingQAFinetuneDataset, resolve_embed_model
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.evaluation.recipes import engine_recipe, nudge_recipe
from adapterkit.evaluation.runner import compare_tasks, write_report
from adapterkit.training.engine import LLAMAINDEX_RECIPE

Pair = Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]


def pairs() -> Dict[str, Callable[[], Pair]]:
    return {
        "lyft-uber": lambda: load_qa_datasets("published"),
        "scifact-scifact": lambda: load_qa_datasets("scifact"),
        "lyft-scifact": lambda: (load_qa_datasets("published")[0], load_qa_datasets("scifact")[1]),
        "scifact-uber": lambda: (load_qa_datasets("scifact")[0], load_qa_datasets("published")[1]),
    }


RECIPES = {
    "walkthrough recipe (4 epochs)": engine_recipe(False, epochs=4, **LLAMAINDEX_RECIPE),
    "labelled pairs only (no look at the target)": engine_recipe(False),
    "defaults": engine_recipe(True),
    "defaults without the guard": engine_recipe(True, guard=False),
    "defaults without memories": engine_recipe(True, corpus_memory=False, question_memory=False),
    "memories alone (no training)": engine_recipe(True, epochs=0),
    "NUDGE-N (edits documents)": nudge_recipe,
}


def markdown(name: str, table, notes: dict) -> str:
    lines = [
        f"### {name}",
        "",
        "| recipe | hit@5 | MRR@5 | nDCG@10 | ΔnDCG@10 [95%] | ΔMRR@5 [95%] | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict(orient="records"):
        note = ", ".join(f"{k} {v}" for k, v in notes.get(row["model"], {}).items())
        lines.append(
            f"| {row['model']} | {row['hit@5']:.4f} | {row['mrr@5']:.4f} | {row['ndcg@10']:.4f} | "
            f"{row['Δndcg@10']} {row['Δndcg@10 95%']} | {row['Δmrr@5']} {row['Δmrr@5 95%']} | {note} |"
        )
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=list(pairs()), help=f"of {list(pairs())}")
    parser.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: all)")
    parser.add_argument("--embed", default="default")
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    recipes = {k: v for k, v in RECIPES.items() if args.recipes is None or k in args.recipes}
    model = resolve_embed_model(args.embed)
    sections, results = compare_tasks(((name, *pairs()[name](), recipes) for name in args.pairs), model, render=markdown)
    command = "python benchmarks/suite.py" + "".join(
        f" --{k} {' '.join(v)}"
        for k, v in (("pairs", args.pairs), ("recipes", args.recipes))
        if v and v != list(pairs()) and v != list(RECIPES)
    )
    write_report(args.output, "Benchmark suite", command, sections, results)


if __name__ == "__main__":
    main()
