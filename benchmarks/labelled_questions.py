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
from typing import List

from adapterkit import resolve_embed_model
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.splits import split_queries
from adapterkit.evaluation.recipes import engine_recipe
from adapterkit.evaluation.runner import compare_tasks, write_report


def task(name: str, source: str, counts: List[int]) -> tuple:
    """The memories alone with the first N training questions, for each N, on the held-out fifth."""
    train, held = split_queries(load_qa_datasets(source)[0])
    qids = list(train.queries)
    first = lambda n: lambda tr, tg, m, f: engine_recipe(True, epochs=0)(tr.with_queries(qids[:n]), tg, m, f)  # noqa: E731
    recipes = {f"{n} labelled questions": first(n) for n in counts if n < len(qids)}
    recipes[f"all {len(qids)} labelled questions"] = engine_recipe(True, epochs=0)
    return name, train, held, recipes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="*", default=[10, 25, 50, 100, 200, 400])
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    model = resolve_embed_model("default")
    sections, results = compare_tasks((task(name, source, args.counts) for name, source in (("scifact-questions", "scifact"), ("lyft-questions", "published"))), model)
    write_report(args.output, "Labelled questions about the searched corpus: how many are enough",
                 "python benchmarks/labelled_questions.py --output benchmarks/results/labelled_questions", sections, results)

if __name__ == "__main__":
    main()
