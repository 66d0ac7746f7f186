"""Plots for the notebooks and the report: training loss, hit-rate@k, and how each query's rank moved.

Every function draws a matplotlib figure. Given ``path``, it saves it once as a small PNG and returns
a ``SavedPlot``, which a notebook shows from that same file (at ``SavedPlot.width`` pixels); without
``path`` it returns the ``Figure``. Figures are closed in pyplot right away, so nothing is shown
twice and headless runs keep no figures open.

Example::

    fig = plot_hit_rate_at_k({"base": base_df, "adapter": tuned_df}, path="hit_rate_at_k.png")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union, overload

import matplotlib.pyplot as plt  # pyplot (not a bare Figure) registers the inline PNG formatter in notebooks
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from adapterkit.evaluation.evaluate import hit_rate_curve
from adapterkit.metrics import paired_ranks

__all__ = ["SavedPlot", "plot_hit_rate_at_k", "plot_loss", "plot_rank_movement", "rank_movement", "save_figure"]

PathLike = Union[str, "os.PathLike[str]"]


class SavedPlot:
    """A plot saved as a PNG file; in a notebook it shows that file, ``width`` pixels wide."""

    def __init__(self, path: Path, figure: Figure, width: int = 520) -> None:
        self.path, self.figure, self.width = Path(path), figure, width

    def _repr_png_(self):
        return self.path.read_bytes(), {"width": self.width}

    def __repr__(self) -> str:
        return f"<plot saved to {self.path.name}>"


def _done(fig: Figure, path: Optional[PathLike]) -> Union[Figure, SavedPlot]:
    return fig if path is None else SavedPlot(save_figure(fig, path), fig)


@overload
def save_figure(fig: Figure, path: None, dpi: int = 80) -> None: ...


@overload
def save_figure(fig: Figure, path: PathLike, dpi: int = 80) -> Path: ...


def save_figure(fig: Figure, path: Optional[PathLike], dpi: int = 80) -> Optional[Path]:
    """Save ``fig`` as a PNG at ``path`` (folders created); return the path, or None when ``path`` is None."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp or software version in the file, so the same figure gives the same bytes.
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    # Line plots need few colours: a 32-colour palette makes the file (and the stored notebook) ~3x smaller.
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    small.save(path, "PNG", optimize=True)
    return path


def _new(figsize=(6.4, 4.0), ncols: int = 1):
    fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
    plt.close(fig)  # keep it out of pyplot: returned and displayed once, never auto-shown again
    return fig, axes[0]


def plot_loss(
    loss_history: Sequence[float],
    epoch_loss: Optional[Sequence[float]] = None,
    val_mrr: Optional[Sequence[float]] = None,
    title: str = "Training loss",
    path: Optional[PathLike] = None,
) -> Union[Figure, SavedPlot]:
    """Loss per optimiser step (light) and per epoch (dots), and held-out MRR@10 per epoch if given.

    Args:
        loss_history: ``engine.loss_history`` (one value per step).
        epoch_loss: ``engine.epoch_loss`` (mean per epoch), drawn at the end of each epoch.
        val_mrr: ``engine.val_mrr`` (index 0 before training), on a second axis.
        path: also save a PNG there.
    """
    fig, (ax,) = _new()
    steps = np.arange(1, len(loss_history) + 1)
    if len(steps):
        ax.plot(steps, loss_history, color="tab:blue", alpha=0.35, lw=1, label="loss per step")
    if epoch_loss:
        per_epoch = len(loss_history) / len(epoch_loss) if len(loss_history) else 1
        x = per_epoch * np.arange(1, len(epoch_loss) + 1)
        ax.plot(x, epoch_loss, "o-", color="tab:blue", label="mean loss per epoch")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MultipleNegativesRankingLoss")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if val_mrr:
        ax2 = ax.twinx()
        per_epoch = len(loss_history) / max(1, len(val_mrr) - 1) if len(loss_history) else 1
        ax2.plot(per_epoch * np.arange(len(val_mrr)), val_mrr, "s--", color="tab:orange", label="held-out MRR@10")
        ax2.set_ylabel("held-out MRR@10")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return _done(fig, path)


def plot_hit_rate_at_k(
    results: Mapping[str, pd.DataFrame],
    ks: Sequence[int] = range(1, 11),
    title: str = "Hit-rate@k on the evaluation questions",
    path: Optional[PathLike] = None,
) -> Union[Figure, SavedPlot]:
    """Hit-rate at each k (default 1..10), one line per model, from ``evaluate`` DataFrames."""
    fig, (ax,) = _new()
    ks = list(ks)
    for name, df in results.items():
        curve = hit_rate_curve(df, ks)
        ax.plot(ks, curve.values, "o-", label=name)
    ax.set_xticks(ks)
    ax.set_xlabel("k (results retrieved)")
    ax.set_ylabel("hit-rate@k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _done(fig, path)


def rank_movement(base: pd.DataFrame, adapted: pd.DataFrame, ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Per-query rank changes between two ``evaluate`` DataFrames, summarised in one table.

    Rows: queries whose first relevant chunk moved up, down, or stayed; and for each k in ``ks``, how
    many queries entered and left the top k.
    """
    merged = paired_ranks(base, adapted).rename(columns={"rank_other": "rank_adapter"})
    up = merged["rank_adapter"] < merged["rank_base"]
    down = merged["rank_adapter"] > merged["rank_base"]
    rows = [
        {"change": "rank improved", "queries": int(up.sum())},
        {"change": "rank worsened", "queries": int(down.sum())},
        {"change": "rank unchanged", "queries": int((~up & ~down).sum())},
    ]
    for k in ks:
        rows.append({"change": f"entered the top {k}", "queries": int(((merged["rank_base"] > k) & (merged["rank_adapter"] <= k)).sum())})
        rows.append({"change": f"left the top {k}", "queries": int(((merged["rank_base"] <= k) & (merged["rank_adapter"] > k)).sum())})
    return pd.DataFrame(rows)


def plot_rank_movement(
    base: pd.DataFrame,
    adapted: pd.DataFrame,
    names: Sequence[str] = ("base", "adapter"),
    title: str = "How each query's rank moved",
    path: Optional[PathLike] = None,
) -> Union[Figure, SavedPlot]:
    """Left: rank of each query's first relevant chunk, base vs adapter (log axes; below the diagonal
    is better). Right: histogram of the change in rank (positive: moved up)."""
    merged = paired_ranks(base, adapted)
    rb, ra = merged["rank_base"].to_numpy(), merged["rank_other"].to_numpy()
    fig, (ax, hx) = _new(figsize=(11, 4.2), ncols=2)
    groups = ((ra < rb, "tab:green", "moved up"), (ra > rb, "tab:red", "moved down"), (ra == rb, "tab:gray", "unchanged"))
    rng = np.random.default_rng(0)  # jitter so equal ranks do not hide each other
    for mask, color, label in groups:
        jitter = rng.uniform(0.9, 1.1, size=(2, int(mask.sum())))
        ax.scatter(rb[mask] * jitter[0], ra[mask] * jitter[1], s=10, alpha=0.5, color=color, label=f"{label} ({int(mask.sum())})")
    top = max(10, int(max(rb.max(initial=1), ra.max(initial=1))) * 1.2)
    ax.plot([0.8, top], [0.8, top], color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"rank with {names[0]}")
    ax.set_ylabel(f"rank with {names[1]}")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    delta = (rb - ra).clip(-20, 20)
    hx.hist(delta, bins=np.arange(-20.5, 21.5, 1), color="tab:blue")
    hx.set_yscale("log")
    hx.set_xlabel(f"rank change ({names[0]} − {names[1]}, clipped to ±20; >0 moved up)")
    hx.set_ylabel("queries")
    hx.set_title("Change in rank per query")
    return _done(fig, path)
