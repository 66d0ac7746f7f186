"""Choices checked on the suite's training sides only: parts of the Lyft and SciFact training questions.

No target question of the suite (Uber val, SciFact test) is used here. Tasks, each a (training part,
evaluation part) of training data:

- ``lyft-questions``: 80% of the Lyft questions -> the other 20%, over the whole Lyft corpus (a corpus
  the labelled questions are about: the question memory applies);
- ``lyft-halves``: questions of half of the Lyft chunks -> the other half's, over those chunks only
  (a new corpus from the same domain);
- ``scifact-questions``: 80% of the SciFact train claims -> the other 20%, over the 5,183 abstracts;
- ``lyft-to-scifact`` and ``scifact-to-lyft``: training questions from the other domain.

Run::

    python benchmarks/select_on_training_sides.py --output benchmarks/results/select_on_training_sides
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict, Tuple

from adapterkit import EmbeddingQAFinetuneDataset, resolve_embed_model
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.splits import split_corpus, split_queries
from adapterkit.evaluation.recipes import engine_recipe
from adapterkit.evaluation.runner import compare_tasks, write_report

Task = Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]


def tasks() -> Dict[str, Callable[[], Task]]:
    lyft = lambda: load_qa_datasets("published")[0]  # noqa: E731
    scifact = lambda: load_qa_datasets("scifact")[0]  # noqa: E731
    return {
        "lyft-questions": lambda: split_queries(lyft()),
        "lyft-halves": lambda: split_corpus(lyft()),
        "scifact-questions": lambda: split_queries(scifact()),
        "lyft-to-scifact": lambda: (lyft(), split_queries(scifact())[1]),
        "scifact-to-lyft": lambda: (split_queries(scifact())[0], split_corpus(lyft())[1]),
    }


SLOW = {"epochs": 16, "optimizer_params": {"lr": 1e-3}}  # small steps, more of them
FAST = {"epochs": 8, "optimizer_params": {"lr": 3e-3}}

RECIPES = {
    "labelled pairs only": engine_recipe(False),
    "labelled pairs only, 16 epochs lr 1e-3": engine_recipe(False, **SLOW),
    "labelled pairs only, 8 epochs lr 3e-3": engine_recipe(False, **FAST),
    "defaults, 16 epochs lr 1e-3": engine_recipe(True, **SLOW),
    "defaults, 8 epochs lr 3e-3": engine_recipe(True, **FAST),
    "defaults": engine_recipe(True),
    "defaults without the guard": engine_recipe(True, guard=False),
    "defaults without memories": engine_recipe(True, corpus_memory=False, question_memory=False),
    "memories alone (no training)": engine_recipe(True, epochs=0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=list(tasks()))
    parser.add_argument("--recipes", nargs="*", default=None)
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    recipes = {k: v for k, v in RECIPES.items() if args.recipes is None or k in args.recipes}
    model = resolve_embed_model("default")
    sections, results = compare_tasks(((name, *tasks()[name](), recipes) for name in args.tasks), model)
    write_report(args.output, "Choices on the training sides", "python benchmarks/select_on_training_sides.py", sections, results)


if __name__ == "__main__":
    main()
