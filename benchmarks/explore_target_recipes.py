"""Variations of the target-corpus recipe, scored on Lyft splits only (no Uber question is read).

The protocol of ``select_on_lyft_halves.py``: Lyft's chunks in two parts, A labelled and B searched
(B's chunks given as ``unlabeled_corpus``), scored on B's real questions, top 5; here over the three
contiguous thirds (``blocks``) and three random halves (``random``) at once. The corpus memory is
off, so the rows compare the trained adapter alone. Each variation appends one JSON line to
``benchmarks/results/explore_target_recipes.jsonl``.

    python benchmarks/explore_target_recipes.py all            # every variation (orthogonal: ~15 min)
    python benchmarks/explore_target_recipes.py default bias   # some of them
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch

from adapterkit import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset, evaluate, resolve_embed_model
from adapterkit.adapters import LowRankLinear, OrthogonalLinear
from adapterkit.data import get_file

sys.path.insert(0, str(Path(__file__).parent))
from select_on_lyft_halves import halves  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "explore_target_recipes.jsonl"


class Engine(EmbeddingAdapterFinetuneEngine):
    """The engine with two knobs it does not offer: a weight on the pseudo-query loss, and held-out
    selection that weighs the labelled and the pseudo-query groups equally."""

    pseudo_weight = 1.0
    balanced_val = False

    def _loss(self, loss_model, group, rows, tensors):
        return super()._loss(loss_model, group, rows, tensors) * (self.pseudo_weight if group.name == "unlabeled" else 1.0)

    def validation_rr(self, k: int = 10, adapter=None, groups=None) -> np.ndarray:
        if not self.balanced_val:
            return super().validation_rr(k, adapter, groups)
        parts = [super(Engine, self).validation_rr(k, adapter, [g]) for g in (self.groups if groups is None else groups)]
        parts = [p for p in parts if len(p)]
        n = sum(len(p) for p in parts)
        return np.concatenate([p * n / (len(parts) * len(p)) for p in parts])  # each group's mean counts equally


def shrink(alpha: float) -> Callable[[torch.nn.Module], None]:
    """After training, W -> I + alpha (W - I): less (alpha < 1) or more (alpha > 1) of what was learned."""
    def apply(model: torch.nn.Module) -> None:
        w = model.linear.weight.data
        eye = torch.eye(w.shape[0])
        w.copy_(eye + alpha * (w - eye))
    return apply


VARIATIONS: Dict[str, Dict[str, Any]] = {
    "default": {},
    "scale50": {"options": {"scale": 50.0}},
    "scale20": {"options": {"scale": 20.0}},
    "bs64": {"options": {"batch_size": 64}},
    "bs16": {"options": {"batch_size": 16}},
    "ep24": {"options": {"epochs": 24}},
    "lr5e-4_ep32": {"options": {"epochs": 32, "optimizer_params": {"lr": 5e-4}}},
    "bias": {"options": {"bias": True}},
    "reg0.01": {"options": {"identity_reg": 0.01}},
    "pw0.5": {"attrs": {"pseudo_weight": 0.5}},
    "pw0.5_pc8": {"options": {"pseudo_queries_per_chunk": 8}, "attrs": {"pseudo_weight": 0.5}},
    "balval": {"attrs": {"balanced_val": True}},
    "balval_pc8": {"options": {"pseudo_queries_per_chunk": 8}, "attrs": {"balanced_val": True}},
    "lowrank64": {"adapter": lambda: LowRankLinear(384, 64)},
    "ortho": {"adapter": lambda: OrthogonalLinear(384)},
    "a0.5": {"after": shrink(0.5)},
    "a1.5": {"after": shrink(1.5)},
    "a2": {"after": shrink(2.0)},
    "ens3": {"ensemble": 3},  # average the weights of 3 runs with different seeds
}


def run(name: str, splits: dict, model: Any) -> dict:
    spec = VARIATIONS[name]
    scores: Dict[str, list] = {}
    t0 = time.perf_counter()
    for (split, seed), (a, b) in splits.items():
        states = []
        for e in range(spec.get("ensemble", 1)):
            engine = Engine(a, model, unlabeled_corpus=b.corpus, seed=seed * 100 + e if spec.get("ensemble") else seed,
                            adapter_model=spec["adapter"]() if "adapter" in spec else None, corpus_memory=False,
                            model_output_path="/tmp/adapterkit-explore", show_progress=False, **spec.get("options", {}))
            for key, value in spec.get("attrs", {}).items():
                setattr(engine, key, value)
            engine.finetune()
            states.append(copy.deepcopy(engine.model.state_dict()))
        engine.model.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]})
        if "after" in spec:
            spec["after"](engine.model)
        engine.model.save("/tmp/adapterkit-explore")
        df = evaluate(b, engine.get_finetuned_model(), top_k=5)
        scores.setdefault(split, []).append((df["is_hit"].mean(), df["mrr"].mean()))
    line: Dict[str, Any] = {"name": name}
    for split, values in scores.items():
        line[f"{split}_hit"], line[f"{split}_mrr"] = (round(float(x), 4) for x in np.mean(values, axis=0))
    line["mean_mrr"] = round((line["blocks_mrr"] + line["random_mrr"]) / 2, 4)
    line["s"] = round(time.perf_counter() - t0, 1)
    return line


def main() -> None:
    names = list(VARIATIONS) if sys.argv[1:] in ([], ["all"]) else sys.argv[1:]
    unknown = set(names) - set(VARIATIONS)
    if unknown:
        raise SystemExit(f"Unknown variations {sorted(unknown)}; choose from {list(VARIATIONS)}.")
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    model = resolve_embed_model("default")
    splits = {(split, seed): halves(train, seed, split) for split in ("blocks", "random") for seed in range(3)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        line = run(name, splits, model)
        print(json.dumps(line), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
