"""Recipes × metrics on the published Uber val set, with seeds and per-query win/loss against base.

Training never sees the Uber val questions: Lyft pairs only, or Lyft pairs plus the Uber chunks as
an unlabelled target corpus (pseudo-queries from their own sentences, and a ``CorpusMemory`` of them). Defaults are selected on
held-out Lyft chunks (and held-out pseudo-queries), never on the val questions.

    python benchmarks/recipes.py --seeds 0 1 2 [--embed default] [--output benchmarks/results/recipes.md]
"""

from __future__ import annotations

import argparse
import json
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
from adapterkit.evaluation.evaluate import win_loss
from adapterkit.training.engine import LLAMAINDEX_RECIPE

WORK = tempfile.TemporaryDirectory(prefix="adapterkit-bench-")  # engines' output folders, removed at exit

OLD = dict(
    optimizer_params={"lr": 3e-3}, epochs=8, pseudo_queries_per_chunk=2, pseudo_query_words=None, refit=False, corpus_memory=False
)  # target-corpus defaults before refit
RECIPES = {
    "llamaindex walkthrough recipe (4 epochs)": dict(epochs=4, **LLAMAINDEX_RECIPE),
    "engine defaults, Lyft only": dict(),
    "engine defaults + Uber chunks unlabelled": dict(unlabeled="val"),
    "defaults without refit, Lyft only": dict(refit=False),
    "defaults but identity 0.01 (the Lyft-halves pick without a target corpus), Lyft only": dict(identity_reg=0.01),
    "defaults without corpus memory + Uber chunks unlabelled (the earlier target-corpus defaults)": dict(
        unlabeled="val", corpus_memory=False
    ),
    "Uber chunks as corpus memory over the identity, no training (epochs 0)": dict(unlabeled="val", epochs=0),
    "defaults without refit + Uber chunks unlabelled": dict(unlabeled="val", refit=False),
    "defaults but 8-24-word window pseudo-queries + Uber chunks unlabelled": dict(unlabeled="val", pseudo_query_words=(8, 24)),
    "earlier defaults (lr 3e-3, 8 epochs, 2 pseudo-queries per chunk, no refit) + Uber chunks unlabelled": dict(unlabeled="val", **OLD),
    "defaults but in-batch negatives + 5 mined hard negatives, Lyft only": dict(negatives="in_batch", hard_negatives=5),
    "no selection, no identity pull, lr 3e-2, 30 epochs (overfits)": dict(
        epochs=30, optimizer_params={"lr": 3e-2}, identity_reg=0.0, val_fraction=0.0, guard=False, refit=False
    ),
    "same overfitting run with held-out selection": dict(epochs=30, optimizer_params={"lr": 3e-2}, identity_reg=0.0),
}


def summarise(df: pd.DataFrame) -> dict:
    return {"hit_rate": df["is_hit"].mean(), "mrr": df["mrr"].mean(), "ndcg": df["ndcg"].mean(), "recall": df["recall"].mean()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--embed", default="default")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/recipes.md")
    args = parser.parse_args()

    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    model = resolve_embed_model(args.embed)
    base = evaluate(val, model, top_k=args.top_k)

    # 275 of 395 Uber chunks exceed bge's 512-token window: split metrics by whether the answer's chunk was cut.
    counter = getattr(model, "token_counts", None)
    truncated = {}
    if counter is not None:
        ids = list(val.corpus)
        truncated = dict(zip(ids, np.array(counter([val.corpus[d] for d in ids])) > 512))

    rows = [
        {
            "recipe": "base model",
            "seeds": "-",
            **{k: f"{v:.4f}" for k, v in summarise(base).items()},
            "wins/losses vs base": "-",
            "best epoch": "-",
            "train s": "-",
        }
    ]
    split_rows = []
    for name, recipe in RECIPES.items():
        recipe = dict(recipe)
        unlabeled = val.corpus if recipe.pop("unlabeled", None) == "val" else None
        scores, wl, epochs, secs = [], [], [], []
        for seed in args.seeds:
            t0 = time.perf_counter()
            engine = EmbeddingAdapterFinetuneEngine(
                train,
                model,
                model_output_path=f"{WORK.name}/{abs(hash(name))}-{seed}",
                unlabeled_corpus=unlabeled,
                seed=seed,
                show_progress=False,
                **recipe,
            )
            engine.finetune()
            secs.append(time.perf_counter() - t0)
            df = evaluate(val, engine.get_finetuned_model(), top_k=args.top_k)
            scores.append(summarise(df))
            wl.append(win_loss(base, df))
            epochs.append(engine.best_epoch)
            if truncated:
                cut = df["expected"].map(lambda e: bool(truncated[e[0]]))
                for flag in (True, False):
                    split_rows.append(
                        {
                            "recipe": name,
                            "seed": seed,
                            "answer chunk truncated": flag,
                            "queries": int((cut == flag).sum()),
                            "hit_rate": df.loc[cut == flag, "is_hit"].mean(),
                            "mrr": df.loc[cut == flag, "mrr"].mean(),
                        }
                    )
        frame = pd.DataFrame(scores)
        row = {"recipe": name, "seeds": len(args.seeds)}
        row.update({k: f"{frame[k].mean():.4f} ± {frame[k].std(ddof=0):.4f}" for k in frame})
        row["wins/losses vs base"] = " ".join(f"{w['wins']}/{w['losses']}" for w in wl)
        row["best epoch"] = " ".join(str(e) for e in epochs)
        row["train s"] = f"{np.mean(secs):.1f}"
        rows.append(row)
        print(row, flush=True)

    table = pd.DataFrame(rows).to_markdown(index=False)
    base_split = ""
    if truncated:
        cut = base["expected"].map(lambda e: bool(truncated[e[0]]))
        base_split = "\n".join(
            f"- base, answer chunk truncated={f}: {int((cut == f).sum())} queries, "
            f"hit {base.loc[cut == f, 'is_hit'].mean():.4f}, MRR {base.loc[cut == f, 'mrr'].mean():.4f}"
            for f in (True, False)
        )
        split = pd.DataFrame(split_rows).groupby(["recipe", "answer chunk truncated"])[["queries", "hit_rate", "mrr"]].mean().round(4)
        base_split += "\n\n" + split.to_markdown()
    text = f"{table}\n\nTop-{args.top_k}, published Uber val (790 queries), model {model.model_name}.\n\n{base_split}\n"
    print(text)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
