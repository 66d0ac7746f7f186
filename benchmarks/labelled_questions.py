"""Do your own labelled questions add to the gain? The defaults with N questions against the defaults without.

A user of ``adapterkit fit`` either brings no questions (the labelled side is then the walkthrough's
published Lyft questions, and the searched corpus adds its label-free signals: pseudo-queries and the
sentence memory) or brings N questions about the searched corpus (``target_questions``: the training stays as it was, and
they choose the memories and become the question memory's keys).
For each public target, a fifth of its questions is held out and scored; N questions are drawn from the
rest. Each row's Δ is against the base model and, to answer the question above, against the defaults
without questions (paired bootstrap, 95%). Run::

    python benchmarks/labelled_questions.py --output benchmarks/results/labelled_questions
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List

import numpy as np

from adapterkit import resolve_embed_model
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.splits import split_queries
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.recipes import engine_recipe
from adapterkit.evaluation.runner import compare_recipes, provenance

WITHOUT = "defaults without questions"


def targets() -> Dict[str, tuple]:
    """``{name: (pool of labelled questions, held-out target)}`` over the same corpus."""
    uber = load_qa_datasets("published")[1]
    pool, held = split_queries(uber)
    scifact_train, scifact_test = load_qa_datasets("scifact")
    return {"uber": (pool, held), "scifact": (scifact_train, scifact_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="*", default=[5, 10, 25, 50, 100])
    parser.add_argument("--targets", nargs="*", default=["uber", "scifact"])
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    model = resolve_embed_model("default")
    lyft = load_qa_datasets("published")[0]
    sections: List[str] = []
    results: Dict[str, dict] = {}
    for name, (pool, held) in targets().items():
        if name not in args.targets:
            continue
        order = [list(pool.queries)[i] for i in np.random.default_rng(0).permutation(len(pool.queries))]
        recipes = {WITHOUT: lambda tr, tg, m, f: engine_recipe(True)(lyft, tg, m, f)}
        for n in args.counts:
            recipes[f"defaults with {n} questions"] = (
                lambda n: lambda tr, tg, m, f: engine_recipe(True, target_questions=tr.with_queries(order[:n]))(lyft, tg, m, f)
            )(n)
        with tempfile.TemporaryDirectory() as work:
            frames, notes = compare_recipes(pool, held, recipes, model, Path(work), log=lambda line: print(f"[{name}] {line}", flush=True))
        against_base = comparison_table(frames)
        against_without = comparison_table({k: v for k, v in frames.items() if k != "base"}, base=WITHOUT)
        results[name] = {
            "held_out_questions": len(held.queries),
            "table": against_base.to_dict(orient="records"),
            "against_without": against_without.to_dict(orient="records"),
            "notes": notes,
        }
        sections.append(
            f"### {name} ({len(held.queries)} held-out questions)\n\nAgainst the base model:\n\n"
            + against_base.to_markdown(index=False)
            + "\n\nAgainst the defaults without questions:\n\n"
            + against_without[["model", "Δndcg@10", "Δndcg@10 95%", "Δmrr@5", "Δmrr@5 95%"]].to_markdown(index=False)
            + "\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in notes.items())
            + "\n"
        )
    print("\n".join(sections))
    if args.output:
        import json

        command = "python benchmarks/labelled_questions.py " + " ".join(sys.argv[1:])
        Path(args.output + ".md").write_text(
            f"# Your own labelled questions: do they add to the gain?\n\n`{command}`\n\n" + "\n".join(sections)
        )
        Path(args.output + ".json").write_text(json.dumps({**results, "provenance": provenance()}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
