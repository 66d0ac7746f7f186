"""How many labelled questions about the searched corpus are enough? Training sides only.

The labelled questions whose chunks are in the searched corpus become a question memory, and they
decide how far each memory pulls (``memory_choice.py``). This measures that part alone (the memories
over the base model, ``epochs=0``) with the first N of the training questions, on the held-out fifth
of the questions of the same corpus (``select_on_training_sides.py``'s ``scifact-questions`` and
``lyft-questions`` tasks). No target question of the suite is used. Run::

    python benchmarks/labelled_questions.py --output benchmarks/results/labelled_questions
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from adapterkit import resolve_embed_model
from adapterkit.compare import comparison_table, compare_recipes, engine_recipe, split_queries
from adapterkit.nodes import load_qa_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="*", default=[10, 25, 50, 100, 200, 400])
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    model = resolve_embed_model("default")
    sections, results = [], {}
    with tempfile.TemporaryDirectory(prefix="adapterkit-labelled-") as work:
        for task, source in (("scifact-questions", "scifact"), ("lyft-questions", "published")):
            train, held = split_queries(load_qa_datasets(source)[0])
            qids = list(train.queries)
            recipes = {f"{n} labelled questions": (lambda n: lambda tr, tg, m, f: engine_recipe(True, epochs=0)(tr.with_queries(qids[:n]), tg, m, f))(n)
                       for n in args.counts if n < len(qids)}
            recipes[f"all {len(qids)} labelled questions"] = engine_recipe(True, epochs=0)
            frames, notes = compare_recipes(train, held, recipes, model, Path(work) / task, log=lambda line, t=task: print(f"[{t}] {line}", flush=True))
            table = comparison_table(frames)
            results[task] = {"table": table.to_dict(orient="records"), "notes": notes}
            sections.append(f"### {task}\n\n" + table.to_markdown(index=False) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n")
    print("\n".join(sections))
    if args.output:
        Path(args.output + ".md").write_text("# Labelled questions about the searched corpus: how many are enough\n\n"
                                             "`python benchmarks/labelled_questions.py --output benchmarks/results/labelled_questions`\n\n" + "\n".join(sections))
        Path(args.output + ".json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
