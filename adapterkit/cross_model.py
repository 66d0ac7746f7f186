"""A linear map from one embedding model's space to another's, fitted on chunks embedded by both.

This is the start of a cross-model adapter: queries embedded by a NEW model, mapped into the space
of the OLD model that built the index, so the index is never re-embedded. With equal dimensions the
map is the orthogonal Procrustes solution (a rotation: it keeps every angle between new vectors);
with different dimensions (e.g. 768 -> 384) it is ridge-regularised least squares. Rows are taken at
unit length, as cosine search sees them.

A model folder trained this way holds ``cross_model.json``: both models' identities and dimensions.
``AdapterEmbeddingModel`` reads it and refuses a base model or an index it was not made for.

Example::

    start = fit_linear_map(new_chunk_vectors, old_chunk_vectors)   # LinearLayer(d_new, d_old)
    mapped = start(torch.as_tensor(new_query_vectors))
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.adapters import TORCH_NAME, LinearLayer
from adapterkit.atomic import write_text
from adapterkit.embeddings import model_identity
from adapterkit.errors import AdapterkitError
from adapterkit.metrics import unit_rows
from adapterkit.records import read_record

METHODS = ("auto", "procrustes", "lstsq")
CROSS_MODEL_FILE = "cross_model.json"  # in a model folder whose queries and documents come from two models
_FIELDS = {
    "query_model": str,
    "query_model_name": str,
    "query_dim": int,
    "index_model": str,
    "index_model_name": str,
    "index_dim": int,
    "sample_chunks": int,
}


class SampleTooSmallError(AdapterkitError, ValueError):
    """Fewer paired rows than the map needs."""


class CrossModelError(AdapterkitError, ValueError):
    """A cross-model adapter used over a model, or against an index, it was not trained for."""


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
        raise SampleTooSmallError(
            f"{len(new)} paired texts cannot fit a map from {d_new} dimensions: give at least "
            f"{minimum_pairs(d_new)} (one per dimension of the new model; a few times more fits better)."
        )
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


def sample_count(size: Union[int, float], n_chunks: int) -> int:
    """Chunks in the paired sample: ``size`` chunks (an int >= 0), or that share of ``n_chunks`` (a float in [0, 1])."""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 <= size or (isinstance(size, float) and size > 1):
        raise ValueError(f"map_sample must be a count of chunks (int >= 0) or a share of them (float in [0, 1]), got {size!r}.")
    return min(n_chunks, size if isinstance(size, int) else round(size * n_chunks))


def choose_sample(chunk_ids: Sequence[str], size: Union[int, float], seed: int) -> List[str]:
    """The chunks both models embed to fit the start map: a seeded random choice, in corpus order."""
    n = sample_count(size, len(chunk_ids))
    rows = np.sort(np.random.default_rng(seed).permutation(len(chunk_ids))[:n])
    return [chunk_ids[i] for i in rows]


def _name(model: BaseEmbedding) -> str:
    return f"{model.class_name()} {getattr(model, 'model_name', '')}".strip()


def write_identity(
    folder: Union[str, os.PathLike],
    query_model: BaseEmbedding,
    index_model: BaseEmbedding,
    query_dim: int,
    index_dim: int,
    sample_chunks: int,
) -> None:
    """Record in ``folder`` which model embeds the queries and which built the index."""
    record = {
        "query_model": model_identity(query_model),
        "query_model_name": _name(query_model),
        "query_dim": int(query_dim),
        "index_model": model_identity(index_model),
        "index_model_name": _name(index_model),
        "index_dim": int(index_dim),
        "sample_chunks": int(sample_chunks),
    }
    write_text(Path(folder) / CROSS_MODEL_FILE, json.dumps(record, indent=2))
    # LlamaIndex's AdapterEmbeddingModel reads only this weights file and would embed documents with the
    # query model: without it, LlamaIndex refuses the folder (adapterkit reads model.safetensors).
    (Path(folder) / TORCH_NAME).unlink(missing_ok=True)


def read_identity(folder: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """``cross_model.json`` of a model folder as a dict (plain JSON, checked field by field), or None without one."""
    return read_record(Path(folder) / CROSS_MODEL_FILE, _FIELDS, CrossModelError, "Train the adapter again or restore the file.")


def check_query_model(record: Dict[str, Any], model: BaseEmbedding, folder: Union[str, os.PathLike]) -> None:
    """Refuse to serve a cross-model folder over a base model other than the one its queries were trained on."""
    if model_identity(model) != record["query_model"]:
        raise CrossModelError(
            f"{folder} maps queries of {record['query_model_name']} ({record['query_model']}) into the index of "
            f"{record['index_model_name']}, but it was loaded over {_name(model)} ({model_identity(model)}). "
            "Load it over the model it was trained with; the vectors of any other model mean nothing to it."
        )


def check_index_dim(record: Optional[Dict[str, Any]], query_dim: int, index_dim: int, what: str = "the index") -> None:
    """Refuse query vectors of another dimension than ``what``'s, naming both models where known."""
    if query_dim == index_dim:
        return
    if record is not None:
        raise CrossModelError(
            f"This adapter maps {record['query_model_name']} queries into {record['index_dim']}-dimensional vectors of "
            f"{record['index_model_name']}, but {what} holds {index_dim}-dimensional vectors: serve it against an index "
            f"built by {record['index_model_name']}."
        )
    raise CrossModelError(
        f"The query vectors are {query_dim}-dimensional but {what} holds {index_dim}-dimensional vectors: "
        "embed the queries with the model that built the index, or train a cross-model adapter "
        "(EmbeddingAdapterFinetuneEngine(..., index_model=...))."
    )
