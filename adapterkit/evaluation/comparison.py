"""Recipes side by side: one table of metrics, each against base with a paired bootstrap interval."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np
import pandas as pd

from adapterkit.metrics import paired_bootstrap, reciprocal_rank

METRICS = ("hit@5", "mrr@5", "ndcg@10")


def per_query(frame: pd.DataFrame) -> Dict[str, np.ndarray]:
    """hit@5 and MRR@5 (from the first relevant rank) and nDCG@10 of each query of an ``evaluate(top_k=10)`` frame."""
    rank = frame["rank"].to_numpy()
    return {"hit@5": (rank <= 5).astype(float), "mrr@5": reciprocal_rank(rank, 5), "ndcg@10": frame["ndcg"].to_numpy(dtype=float)}


def comparison_table(
    frames: Mapping[str, pd.DataFrame], base: str = "base", deltas: Sequence[str] = ("ndcg@10", "mrr@5"), digits: int = 4, reps: int = 2000
) -> pd.DataFrame:
    """One row per model: ``METRICS``, and for ``deltas`` the change against ``base`` with its 95% interval.

    Args:
        frames: ``{name: evaluate(..., top_k=10) DataFrame}`` over the same questions, ``base`` among them.
        deltas: metrics whose change is given as ``Δ<metric>`` and ``Δ<metric> 95%`` (``"[low, high]"``).
    """
    if base not in frames:
        raise ValueError(f"frames has no {base!r} entry to compare against; give the base model's results under that name.")
    reference = per_query(frames[base])
    rows = []
    for name, frame in frames.items():
        scores = per_query(frame)
        if len(scores["hit@5"]) != len(reference["hit@5"]) or list(frame["query_id"]) != list(frames[base]["query_id"]):
            raise ValueError(f"{name!r} was evaluated on other questions than {base!r}; compare results of the same dataset.")
        row = {"model": name, **{m: round(float(scores[m].mean()), digits) for m in METRICS}}
        for m in deltas:
            if name == base:
                row[f"Δ{m}"], row[f"Δ{m} 95%"] = "", ""
                continue
            diff, low, high = paired_bootstrap(reference[m], scores[m], reps=reps)
            row[f"Δ{m}"], row[f"Δ{m} 95%"] = f"{diff:+.{digits}f}", f"[{low:+.{digits}f}, {high:+.{digits}f}]"
        rows.append(row)
    return pd.DataFrame(rows)
