"""How a served query vector is made: the adapter over base vectors, then the memories, then unit length."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from adapterkit.adapters import check_adapter_dim
from adapterkit.cache import NonFiniteEmbeddingError
from adapterkit.memory.corpus_memory import CorpusMemory, apply_memories
from adapterkit.metrics import unit_rows


def apply_adapter(
    adapter: torch.nn.Module, embeddings: np.ndarray, memories: Sequence[CorpusMemory] = (), batch_size: int = 4096
) -> np.ndarray:
    """Run ``adapter`` (then ``memories``, if any) over rows of ``embeddings`` in batches, without gradients."""
    param = next(adapter.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = adapter.training
    adapter.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(embeddings), batch_size):
            chunk = torch.as_tensor(embeddings[start : start + batch_size], dtype=torch.float32, device=device)
            adapted = adapter(chunk).float()
            adapted = apply_memories(adapted, chunk, memories)
            out.append(adapted.cpu().numpy())
    adapter.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, embeddings.shape[-1]), dtype=np.float32)


def adapt_queries(
    adapter: torch.nn.Module,
    base_queries: np.ndarray,
    memories: Sequence[CorpusMemory] = (),
    normalize: bool = True,
    out_dim: Optional[int] = None,
    source: Optional[str] = None,
) -> np.ndarray:
    """The served query vectors: ``adapter`` (then ``memories``) over base query vectors, unit length if ``normalize``.

    ``AdapterEmbeddingModel`` serves exactly this; any check of "the trained model's query vectors"
    calls it too, so trained and served vectors cannot drift apart.

    Args:
        adapter: the query adapter.
        base_queries: ``(n, d)`` the base model's query vectors.
        memories: corpus memories composed with the adapter.
        normalize: unit-length rows.
        out_dim: the documents' dimension (default: the base model's).
        source: where the adapter comes from (its folder), named in errors.

    Raises ``NonFiniteEmbeddingError`` when a vector is NaN or infinite, or (with ``normalize``) zero,
    naming the stage that made it so: a vector store would rank such a query at random, or fail.
    """
    check_adapter_dim(adapter, base_queries.shape[1], out_dim)  # out_dim: the index's, when another model built it
    adapted = apply_adapter(adapter, base_queries, memories)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing row is reported below, not warned about
        out = unit_rows(adapted) if normalize else adapted
    bad = _unusable(out, normalize)
    if bad.any():
        raise NonFiniteEmbeddingError(_blame(adapter, base_queries, bad, memories, normalize, source))
    return out


def _unusable(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """Rows that are not finite, or (``normalize``) zero: unit_rows makes an overflowing row zero."""
    bad = ~np.isfinite(vectors).all(axis=1)
    return (bad | ~(np.abs(vectors).max(axis=1) > 0)) if normalize and vectors.shape[1] else bad


def _blame(
    adapter: torch.nn.Module,
    base_queries: np.ndarray,
    bad: np.ndarray,
    memories: Sequence[CorpusMemory],
    normalize: bool,
    source: Optional[str],
) -> str:
    """Why the ``bad`` rows are unusable: the base vectors, the adapter alone, or else the memories."""
    rows, where = base_queries[bad], f" of {source}" if source else ""
    count = f"{int(bad.sum())} of {len(bad)} query vectors"
    if not np.isfinite(rows).all():
        return f"The base model returned non-finite (NaN/inf) vectors for {count}: check the base model, not the adapter{where}."
    alone = apply_adapter(adapter, rows)
    with np.errstate(over="ignore", invalid="ignore"):
        alone_bad = _unusable(unit_rows(alone) if normalize else alone, normalize).any()
    if alone_bad:
        what = "are not finite (NaN/inf)" if not np.isfinite(alone).all() else "overflow or are zero (nothing to normalize)"
        return (
            f"The adapter{where} makes {count} unusable: its outputs {what}, while the base model's vectors are finite. "
            "Its weights are unusable (e.g. training diverged): retrain it (a lower learning rate) or load another folder."
        )
    return (
        f"The corpus memories served with the adapter{where} make {count} not finite or zero, while the adapter's output is "
        "fine: check each memory's weight and temperature or rebuild it; memory=False serves the adapter alone."
    )
