"""Choosing the epoch on held-out chunks, so that training can only end at the base model or above it.

Whole chunks (with all their queries) are held out of training. After each epoch the adapter's
reciprocal rank on their queries is measured; an epoch replaces the identity start only when its gain
is larger than one standard error, and a model whose weights or scores are not finite is never chosen.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Sequence

import numpy as np
import torch

from adapterkit.errors import AdapterkitError
from adapterkit.metrics import exact_search, reciprocal_rank
from adapterkit.query_vectors import apply_adapter
from adapterkit.training.sampling import TrainingGroup

logger = logging.getLogger("adapterkit.training.engine")  # the engine's messages, under the engine's name


def validation_rr(adapter: torch.nn.Module, groups: Sequence[TrainingGroup], k: int = 10) -> np.ndarray:
    """Reciprocal rank (0 past ``k``) of each held-out query, ranked among the held-out chunks only.

    Training chunks are left out of the candidates on purpose: an adapter pulls queries toward the
    chunks it was trained on, which would punish it on held-out queries for a reason that does not
    exist on a new corpus (where no chunk was seen in training). A query whose adapted vector is not
    finite misses (``exact_search``).
    """
    rr: List[float] = []
    for group in groups:
        if not len(group.val_idx):
            continue
        chunks = np.unique(group.positives[group.val_idx])
        row = {c: i for i, c in enumerate(chunks)}
        q = apply_adapter(adapter, group.queries[group.val_idx])
        rel = [[row[group.positives[i]], *(row[o] for o in group.other_relevant[i] if o in row)] for i in group.val_idx]
        _, _, ranks = exact_search(q, group.docs[chunks], 1, rel)
        rr.extend(reciprocal_rank([r.min() for r in ranks], k))
    return np.asarray(rr)


def is_finite(model: torch.nn.Module) -> bool:
    """Whether every weight and buffer of ``model`` is finite (a diverged run is not)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def score_epoch(model: torch.nn.Module, rr: np.ndarray) -> float:
    """Held-out MRR of an epoch; -inf for a model with non-finite weights, so it is never chosen."""
    return float(rr.mean()) if len(rr) and is_finite(model) else -math.inf


def clearly_better(rr: np.ndarray, identity_rr: np.ndarray) -> bool:
    """Whether the per-query gain over the identity start exceeds its standard error.

    A small held-out set lets a damaging epoch win by luck; one standard error keeps that rare.
    """
    gain = rr - identity_rr
    if len(gain) > 1:
        return bool(gain.mean() > gain.std(ddof=1) / math.sqrt(len(gain)))
    return bool(gain.mean() > 0) if len(gain) else False


def clearly_worse(rr: np.ndarray, identity_rr: np.ndarray) -> bool:
    """Whether the per-query loss against the identity start exceeds its standard error."""
    return len(rr) > 1 and clearly_better(identity_rr, rr)


def choose(score: float, best_score: float, rr: np.ndarray, identity_rr: np.ndarray, group_sizes: Sequence[int] = ()) -> bool:
    """Whether an epoch scoring ``score`` replaces the best so far.

    Every held-out query counts once, whichever group it comes from (labelled questions, pseudo-queries
    of the target corpus): the pooled per-query gain over the identity start must exceed its standard
    error, so a few held-out questions add their weight to the evidence and never veto it by tying.
    With ``group_sizes`` (held-out queries per group, in the order of ``rr``), the epoch must also not
    be clearly worse than the identity on any one group: a gain on the labelled chunks may not pay for
    a loss on the target corpus, nor the other way round.
    """
    if not (math.isfinite(score) and score > best_score and clearly_better(rr, identity_rr)):
        return False
    bounds = np.cumsum([0, *group_sizes])
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return not any(clearly_worse(rr[part], identity_rr[part]) for part in slices)


class TrainingDivergedError(AdapterkitError, RuntimeError):
    """The adapter's weights became NaN or infinite and no finite epoch could be kept."""


def diverged(epoch: int, has_finite: bool, state: Any, config: Any) -> None:
    """Non-finite weights: training stops; the chosen finite epoch stays, or (none chosen yet) an error."""
    if has_finite:
        if config.verbose:
            logger.info(f"> training diverged at epoch {epoch} (non-finite weights); keeping epoch {state.best_epoch}")
        return
    raise TrainingDivergedError(
        f"The adapter's weights became NaN or infinite in epoch {epoch} ({'refit' if state.phase == 'refit' else 'training'} "
        f"with lr {config.optimizer_params.get('lr')}, scale {config.scale}). Lower the learning rate, "
        "or keep val_fraction > 0 so that a finite epoch is chosen."
    )
