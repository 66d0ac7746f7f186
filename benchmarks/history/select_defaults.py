"""Choose the engine's default recipe on the *training* set only: held-out Lyft chunks, never Uber.

Each configuration is trained on 80% of the Lyft chunks (three different splits/seeds) and scored
by MRR@10 of the held-out 20% queries among the held-out chunks, at the last epoch (no per-run
best-epoch picking, which would flatter long runs). Prints the top configurations.

    python benchmarks/select_defaults.py [--output benchmarks/results/select_defaults.csv]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingQAFinetuneDataset,
    resolve_embed_model,
)
from adapterkit.data.files import get_file

WORK = tempfile.TemporaryDirectory(prefix="adapterkit-bench-")  # engines' output folders, removed at exit

GRID = {
    "lr": [3e-4, 1e-3, 3e-3],
    "epochs": [4, 8, 16],
    "scale": [20.0, 30.0, 50.0],
    "identity_reg": [0.0, 0.01, 0.03],
    "negatives": ["corpus", "in_batch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="benchmarks/results/select_defaults.csv")
    args = parser.parse_args()
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    model = resolve_embed_model("default")
    rows = []
    for values in itertools.product(*GRID.values()):
        cfg = dict(zip(GRID, values))
        scores = []
        for seed in args.seeds:
            engine = EmbeddingAdapterFinetuneEngine(
                train,
                model,
                epochs=cfg["epochs"],
                optimizer_params={"lr": cfg["lr"]},
                scale=cfg["scale"],
                identity_reg=cfg["identity_reg"],
                negatives=cfg["negatives"],
                val_fraction=0.2,
                seed=seed,
                model_output_path=WORK.name,
                show_progress=False,
            )
            engine.finetune()
            scores.append((engine.val_mrr[0], engine.val_mrr[-1]))
        base, last = np.mean(scores, axis=0)
        rows.append({**cfg, "lyft_held_out_mrr_identity": base, "lyft_held_out_mrr_last_epoch": last, "gain": last - base})
    table = pd.DataFrame(rows).sort_values("lyft_held_out_mrr_last_epoch", ascending=False)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.head(15).to_string(index=False))


if __name__ == "__main__":
    main()
