"""A linear map from one embedding model's space to another's, fitted on chunks embedded by both.

This is the start of a cross-model adapter: queries embedded by a NEW model, mapped into the space
of the OLD model that built the index, so the index is never re-embedded. With equal dimensions the
map is the orthogonal Procrustes solution (a rotation: it keeps every angle between new vectors);
with different dimensions (e.g. 768 -> 384) it is ridge-regularised least squares. Rows are taken at
unit length, as cosine search sees them.

Example::

    start = fit_linear_map(new_chunk_vectors, old_chunk_vectors)   # LinearLayer(d_new, d_old)
    mapped = start(torch.as_tensor(new_query_vectors))
"""

from __future__ import annotations

import numpy as np
import torch

from adapterkit.adapters import LinearLayer
from adapterkit.metrics import unit_rows

METHODS = ("auto", "procrustes", "lstsq")


class SampleTooSmallError(ValueError):
    """Fewer paired rows than the map needs."""


def minimum_pairs(new_dim: int) -> int:
    """Paired rows needed to fit a map from ``new_dim`` dimensions: one per dimension (fewer leave it undetermined)."""
    return int(new_dim)


def fit_linear_map(new: np.ndarray, old: np.ndarray, method: str = "auto", ridge: float = 1e-3) -> LinearLayer:
    """``LinearLayer(d_new, d_old)`` with ``W new_i ≈ old_i`` over paired rows.

    Args:
        new: ``(n, d_new)`` the sample embedded by the new (query) model.
        old: ``(n, d_old)`` the same texts embedded by the old (index) model.
        method: ``"procrustes"`` (orthogonal ``W``; needs ``d_new == d_old``), ``"lstsq"`` (ridge least
            squares), or ``"auto"``: Procrustes when the dimensions are equal, else least squares.
        ridge: least squares' penalty on ``||W||^2``, relative to the mean squared row norm.

    Raises ``SampleTooSmallError`` below ``minimum_pairs(d_new)`` rows, ``ValueError`` for mismatched
    or non-finite input.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    new, old = np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)
    if new.ndim != 2 or old.ndim != 2 or len(new) != len(old):
        raise ValueError(f"new and old must be (n, d) arrays of the same n paired rows, got {new.shape} and {old.shape}.")
    for name, array in (("new", new), ("old", old)):
        if not np.isfinite(array).all():
            row = int(np.where(~np.isfinite(array).all(axis=1))[0][0])
            raise ValueError(f"The {name} model's vector of sample row {row} is NaN or infinite: check that model (or drop that text).")
    d_new, d_old = new.shape[1], old.shape[1]
    if len(new) < minimum_pairs(d_new):
        raise SampleTooSmallError(f"{len(new)} paired chunks cannot fit a map from {d_new} dimensions: give at least "
                                  f"{minimum_pairs(d_new)} (one per dimension of the new model; a few times more fits better).")
    if method == "procrustes" and d_new != d_old:
        raise ValueError(f"Procrustes maps equal dimensions; these are {d_new} -> {d_old}: use method='lstsq' (or 'auto').")
    x, y = unit_rows(new), unit_rows(old)
    if method == "procrustes" or (method == "auto" and d_new == d_old):
        u, _, vt = np.linalg.svd(y.T @ x)  # W = U V^T maximises trace(W^T Y^T X) over orthogonal W
        weight = u @ vt
    else:
        gram = x.T @ x + ridge * len(x) * np.eye(d_new)
        weight = np.linalg.solve(gram, x.T @ y).T
    layer = LinearLayer(d_new, d_old)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return layer
