"""What a cap on sentence keys per chunk costs in retrieval, and what it saves in base-model calls.

The corpus memory embeds every sentence (6+ words) of every chunk as a key: the largest share of the
base-model calls at corpus scale. ``memory_keys_per_chunk=k`` keeps k sentences per chunk (the ones
whose text hashes smallest). Each pair of the public suite (``suite.py``) is run with the defaults and
with caps of 1, 2 and 4; reported: the suite's metrics against base, and per cap the sentence keys and
the distinct sentences the base model embeds for the target corpus (keys and pseudo-queries together:
pseudo-queries are sentences too, four per chunk). Run::

    python benchmarks/keys_per_chunk.py --output benchmarks/results/keys_per_chunk
"""

from __future__ import annotations

import argparse
from typing import Dict, Optional

from suite import markdown, pairs

from adapterkit import resolve_embed_model
from adapterkit.data.documents import chunk_sentences
from adapterkit.evaluation.recipes import engine_recipe
from adapterkit.evaluation.runner import compare_tasks, write_report
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.pseudo_queries import pseudo_queries

CAPS = (None, 4, 2, 1)  # None: every sentence (the defaults)


def recipe_name(cap: Optional[int]) -> str:
    return "defaults (every sentence a key)" if cap is None else f"defaults, {cap} key{'s' if cap > 1 else ''} per chunk"


def sentence_counts(corpus: Dict[str, str], cap: Optional[int]) -> Dict[str, int]:
    """Keys of the memory, and the distinct sentences embedded for the target corpus (keys and pseudo-queries)."""
    config = FinetuneConfig()
    drawn = {q for q, _ in pseudo_queries(corpus, config.pseudo_queries_per_chunk, words=config.pseudo_query_words, seed=config.seed)}
    keys = [s for text in corpus.values() for s in chunk_sentences(text, most=cap)]
    return {"chunks": len(corpus), "keys": len(keys), "embedded_sentences": len(set(keys) | drawn)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=list(pairs()), help=f"of {list(pairs())}")
    parser.add_argument("--caps", nargs="*", type=int, default=[c for c in CAPS if c], help="caps besides every sentence")
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()
    caps = [None, *args.caps]
    recipes = {recipe_name(c): engine_recipe(True, **({} if c is None else {"memory_keys_per_chunk": c})) for c in caps}
    counts: Dict[str, Dict[str, Dict[str, int]]] = {}

    def tasks():
        for name in args.pairs:
            train, target = pairs()[name]()
            counts[name] = {recipe_name(c): sentence_counts(target.corpus, c) for c in caps}
            yield name, train, target, recipes

    sections, results = compare_tasks(tasks(), resolve_embed_model("default"), render=markdown)
    lines = [
        "### Base-model sentences per target corpus",
        "",
        "| pair | recipe | chunks | sentence keys | sentences embedded |",
        "|---|---|---|---|---|",
    ]
    for name, per_recipe in counts.items():
        lines += [f"| {name} | {r} | {c['chunks']} | {c['keys']} | {c['embedded_sentences']} |" for r, c in per_recipe.items()]
        results[name]["sentences"] = per_recipe
    command = (
        "python benchmarks/keys_per_chunk.py"
        + (f" --pairs {' '.join(args.pairs)}" if args.pairs != list(pairs()) else "")
        + (f" --caps {' '.join(map(str, args.caps))}" if args.caps != [c for c in CAPS if c] else "")
    )
    write_report(args.output, "Sentence keys per chunk: quality and cost", command, sections + ["\n".join(lines) + "\n"], results)


if __name__ == "__main__":
    main()
