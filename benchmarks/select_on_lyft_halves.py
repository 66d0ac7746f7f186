"""Choose refit and the target-corpus recipe on Lyft alone: half the chunks labelled, half as the target.

The real task is "train on Lyft's questions (and, optionally, Uber's unlabelled chunks), search Uber".
This benchmark rebuilds that shape inside the *training* set, so no Uber question is used: for each
seed, Lyft's chunks are split in two halves, A and B. The engine trains on A's questions (optionally
with B's chunks as ``unlabeled_corpus``) and is scored on B's real questions, ranked among B's chunks
(top 5). The grid was fixed before any run; the defaults are the best mean over three splits.

    python benchmarks/select_on_lyft_halves.py [--seeds 0 1 2] [--output benchmarks/results/select_on_lyft_halves.md]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from adapterkit import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset, evaluate, resolve_embed_model
from adapterkit.data import get_file

GRID = {
    "refit": [False, True],
    "lr": [1e-3, 3e-3],
    "identity_reg": [0.01, 0.03],
    "pseudo_queries_per_chunk": [2, 4],  # only with the unlabelled half
}


def halves(train: EmbeddingQAFinetuneDataset, seed: int) -> tuple:
    """(A, B): each chunk in one half, each question with the half of its first relevant chunk."""
    chunks = np.random.default_rng(seed).permutation(list(train.corpus))
    parts = []
    for ids in (set(chunks[: len(chunks) // 2]), set(chunks[len(chunks) // 2 :])):
        qids = [q for q, docs in train.relevant_docs.items() if docs[0] in ids]
        parts.append(EmbeddingQAFinetuneDataset(
            queries={q: train.queries[q] for q in qids},
            corpus={d: train.corpus[d] for d in train.corpus if d in ids},
            relevant_docs={q: [d for d in train.relevant_docs[q] if d in ids] for q in qids},
        ))
    return parts[0], parts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="benchmarks/results/select_on_lyft_halves.md")
    args = parser.parse_args()
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    model = resolve_embed_model("default")
    splits = {seed: halves(train, seed) for seed in args.seeds}
    base = {seed: evaluate(b, model, top_k=5) for seed, (_, b) in splits.items()}
    rows = [{"mode": "base model", "hit_rate": np.mean([d["is_hit"].mean() for d in base.values()]),
             "mrr": np.mean([d["mrr"].mean() for d in base.values()])}]
    for mode in ("labelled half only", "labelled half + unlabelled half"):
        for values in itertools.product(*GRID.values()):
            cfg = dict(zip(GRID, values))
            if mode == "labelled half only" and cfg["pseudo_queries_per_chunk"] != GRID["pseudo_queries_per_chunk"][0]:
                continue
            hits, mrrs, epochs, secs = [], [], [], []
            for seed, (a, b) in splits.items():
                t0 = time.perf_counter()
                engine = EmbeddingAdapterFinetuneEngine(
                    a, model, optimizer_params={"lr": cfg["lr"]}, identity_reg=cfg["identity_reg"], refit=cfg["refit"],
                    unlabeled_corpus=b.corpus if "unlabelled" in mode else None,
                    pseudo_queries_per_chunk=cfg["pseudo_queries_per_chunk"], seed=seed,
                    model_output_path="/tmp/adapterkit-halves", show_progress=False,
                )
                engine.finetune()
                secs.append(time.perf_counter() - t0)
                df = evaluate(b, engine.get_finetuned_model(), top_k=5)
                hits.append(df["is_hit"].mean())
                mrrs.append(df["mrr"].mean())
                epochs.append(engine.best_epoch)
            if mode == "labelled half only":
                cfg["pseudo_queries_per_chunk"] = "-"
            row = {"mode": mode, **cfg, "hit_rate": np.mean(hits), "mrr": np.mean(mrrs),
                   "best epochs": " ".join(map(str, epochs)), "train s": np.mean(secs)}
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    table = pd.concat([table.iloc[:1], table.iloc[1:].sort_values(["mode", "mrr"], ascending=[True, False])])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (f"Lyft halves (A labelled, B searched), top 5, mean of seeds {args.seeds}; "
            f"B has {np.mean([len(b.queries) for _, b in splits.values()]):.0f} questions on average.\n\n"
            + table.to_markdown(index=False, floatfmt=".4f") + "\n")
    out.write_text(text)
    table.to_csv(out.with_suffix(".csv"), index=False)
    print(text)


if __name__ == "__main__":
    main()
