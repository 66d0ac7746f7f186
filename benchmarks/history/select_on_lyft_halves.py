"""Choose refit and the target-corpus recipe on Lyft alone: some chunks labelled, the rest as the target.

The real task is "train on Lyft's questions (and, optionally, Uber's unlabelled chunks), search Uber".
This benchmark rebuilds that shape inside the *training* set, so no Uber question is used: Lyft's
chunks are split in two parts, A and B. The engine trains on A's questions (optionally with B's
chunks as ``unlabeled_corpus``) and is scored on B's real questions, ranked among B's chunks (top 5).

Splits (``--split``): ``random`` halves (one per seed), or ``blocks``: the filing cut into three
contiguous thirds in document order, each third in turn the target (B) and the other two the
labelled part (A). Blocks carry a shift of topic (business and risks, then the financial notes, then
exhibits), as a new filing does; random halves share every section. Grids were fixed before the runs.

    python benchmarks/select_on_lyft_halves.py --split random --output benchmarks/results/select_on_lyft_halves.md
    python benchmarks/select_on_lyft_halves.py --split blocks --grid wide --output benchmarks/results/select_on_lyft_blocks.md
    python benchmarks/select_on_lyft_halves.py --split blocks --grid pseudo --output benchmarks/results/select_pseudo_blocks.md
    python benchmarks/select_on_lyft_halves.py --split random --grid pseudo --output benchmarks/results/select_pseudo_random.md
    python benchmarks/select_on_lyft_halves.py --split blocks --grid memory --output benchmarks/results/select_memory_blocks.md
    python benchmarks/select_on_lyft_halves.py --split random --grid memory --output benchmarks/results/select_memory_random.md
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingQAFinetuneDataset,
    evaluate,
    resolve_embed_model,
)
from adapterkit.data.files import get_file

WORK = tempfile.TemporaryDirectory(prefix="adapterkit-bench-")  # engines' output folders, removed at exit

GRID = {
    "refit": [False, True],
    "lr": [1e-3, 3e-3],
    "identity_reg": [0.01, 0.03],
    "pseudo_queries_per_chunk": [2, 4],  # only with the unlabelled part
}
WIDE = {
    "refit": [False, True],
    "lr": [1e-3, 3e-3],
    "identity_reg": [0.01, 0.03, 0.1],
    "epochs": [8, 16],
    "pseudo_queries_per_chunk": [2, 4, 8],  # only with the unlabelled part
}
PSEUDO = {"pseudo_query_words": [None, (8, 24)]}  # whole sentences, or 8-24-word windows; other options at their defaults
MEMORY = {"corpus_memory": [False, True], "memory_weight": [0.25, 0.1, 0.5], "memory_temperature": [100.0, 50.0, 200.0]}
PSEUDO_KEYS = ("pseudo_queries_per_chunk", "pseudo_query_words", "corpus_memory", "memory_weight", "memory_temperature")  # need B
GRIDS = {"first": GRID, "wide": WIDE, "pseudo": PSEUDO, "memory": MEMORY}


def halves(train: EmbeddingQAFinetuneDataset, seed: int, split: str = "random") -> tuple:
    """(A, B): each chunk in one part, each question with the part of its first relevant chunk."""
    if split == "random":
        chunks = list(np.random.default_rng(seed).permutation(list(train.corpus)))
        cut = [chunks[: len(chunks) // 2], chunks[len(chunks) // 2 :]]
    else:  # blocks: third number `seed` (document order) is B
        ordered = list(train.corpus)
        third = [ordered[i * len(ordered) // 3 : (i + 1) * len(ordered) // 3] for i in range(3)]
        cut = [[c for i, t in enumerate(third) if i != seed % 3 for c in t], third[seed % 3]]
    return train.restrict(cut[0]), train.restrict(cut[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", choices=["random", "blocks"], default="random")
    parser.add_argument(
        "--grid",
        choices=list(GRIDS),
        default="first",
        help="first: the grid of the first run; wide: more values; pseudo: pseudo-query form at the defaults; memory: the corpus memory",
    )
    parser.add_argument("--output", default="benchmarks/results/select_on_lyft_halves.md")
    args = parser.parse_args()
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    model = resolve_embed_model("default")
    grid = GRIDS[args.grid]
    splits = {seed: halves(train, seed, args.split) for seed in args.seeds}
    base = {seed: evaluate(b, model, top_k=5) for seed, (_, b) in splits.items()}
    rows = [
        {
            "mode": "base model",
            "hit_rate": np.mean([d["is_hit"].mean() for d in base.values()]),
            "mrr": np.mean([d["mrr"].mean() for d in base.values()]),
        }
    ]
    for mode in ("labelled part only", "labelled part + unlabelled part"):
        for values in itertools.product(*grid.values()):
            cfg = dict(zip(grid, values))
            if mode == "labelled part only" and any(cfg[k] != grid[k][0] for k in PSEUDO_KEYS if k in grid):
                continue
            if cfg.get("corpus_memory") is False and (cfg["memory_weight"], cfg["memory_temperature"]) != (0.25, 100.0):
                continue  # no memory: its settings do nothing
            hits, mrrs, epochs, secs = [], [], [], []
            for seed, (a, b) in splits.items():
                t0 = time.perf_counter()
                options = {k: v for k, v in cfg.items() if k != "lr" and not (k in PSEUDO_KEYS and "unlabelled" not in mode)}
                if "lr" in cfg:
                    options["optimizer_params"] = {"lr": cfg["lr"]}
                if args.grid in ("first", "wide"):  # those runs predate the word-window pseudo-queries
                    options.setdefault("pseudo_query_words", None)
                    options.setdefault("epochs", 8)
                engine = EmbeddingAdapterFinetuneEngine(
                    a,
                    model,
                    unlabeled_corpus=b.corpus if "unlabelled" in mode else None,
                    seed=seed,
                    model_output_path=WORK.name,
                    show_progress=False,
                    **options,
                )
                engine.finetune()
                secs.append(time.perf_counter() - t0)
                df = evaluate(b, engine.get_finetuned_model(), top_k=5)
                hits.append(df["is_hit"].mean())
                mrrs.append(df["mrr"].mean())
                epochs.append(engine.best_epoch)
            if mode == "labelled part only":
                cfg.update({k: "-" for k in PSEUDO_KEYS if k in cfg})
            if cfg.get("pseudo_query_words", 0) is None:
                cfg["pseudo_query_words"] = "whole sentences"
            row = {
                "mode": mode,
                **cfg,
                "hit_rate": np.mean(hits),
                "mrr": np.mean(mrrs),
                "best epochs": " ".join(map(str, epochs)),
                "train s": np.mean(secs),
            }
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    table = pd.concat([table.iloc[:1], table.iloc[1:].sort_values(["mode", "mrr"], ascending=[True, False])])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"Lyft split `{args.split}` (A labelled, B searched), grid `{args.grid}`, top 5, mean of splits {args.seeds}; "
        f"B has {np.mean([len(b.queries) for _, b in splits.values()]):.0f} questions on average.\n\n"
        + table.to_markdown(index=False, floatfmt=".4f")
        + "\n"
    )
    out.write_text(text)
    table.to_csv(out.with_suffix(".csv"), index=False)
    print(text)


if __name__ == "__main__":
    main()
