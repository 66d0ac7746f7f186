"""How a served query vector is made: the adapter over base vectors, then the memories, then unit length."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from adapterkit.adapters import check_adapter_dim
from adapterkit.memory.corpus_memory import CorpusMemory, apply_memories
from adapterkit.metrics import unit_rows


def apply_adapter(adapter: torch.nn.Module, embeddings: np.ndarray, memories: Sequence[CorpusMemory] = (),
                  batch_size: int = 4096) -> np.ndarray:
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


def adapt_queries(adapter: torch.nn.Module, base_queries: np.ndarray, memories: Sequence[CorpusMemory] = (),
                  normalize: bool = True, out_dim: Optional[int] = None) -> np.ndarray:
    """The served query vectors: ``adapter`` (then ``memories``) over base query vectors, unit length if ``normalize``.

    ``AdapterEmbeddingModel`` serves exactly this; any check of "the trained model's query vectors"
    calls it too, so trained and served vectors cannot drift apart. ``out_dim``: the documents'
    dimension (default: the base model's).
    """
    check_adapter_dim(adapter, base_queries.shape[1], out_dim)  # out_dim: the index's, when another model built it
    adapted = apply_adapter(adapter, base_queries, memories)
    return unit_rows(adapted) if normalize else adapted
