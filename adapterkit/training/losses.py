"""The training loss: MultipleNegativesRankingLoss over an adapter's query vectors and frozen documents."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultipleNegativesRankingLoss(nn.Module):
    """Softmax cross-entropy over scaled cosine similarities of adapted queries to documents.

    Each query should score its positive document above every other candidate: the other positives
    of the batch (LlamaIndex's in-batch negatives), mined hard negatives, or a whole frozen corpus.
    Only the adapter has gradients; documents are constants.

    Args:
        adapter: the query adapter being trained (any ``torch.nn.Module``).
        scale: inverse temperature on cosine similarities (sentence-transformers uses 20).

    Inputs:
        queries: ``(B, d)`` base query embeddings.
        docs: ``(M, d)`` candidate document embeddings.
        labels: ``(B,)`` the column of each query's positive in ``docs``.
        mask: ``(B, M)`` optional; True where a candidate is another relevant document of that query,
            which must not count as a negative.

    Example::

        loss_fn = MultipleNegativesRankingLoss(LinearLayer(384, 384), scale=30.0)
        loss = loss_fn(queries, docs, labels)
        loss.backward()
    """

    def __init__(self, adapter: nn.Module, scale: float = 20.0) -> None:
        super().__init__()
        self.adapter, self.scale = adapter, scale

    def forward(self, queries: Tensor, docs: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        scores = F.normalize(self.adapter(queries), dim=-1) @ F.normalize(docs, dim=-1).T * self.scale
        if mask is not None:
            scores = scores.masked_fill(mask, -1e4)
        return F.cross_entropy(scores, labels)

    def get_config_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale}


def identity_penalty(adapter: nn.Module, queries: Tensor) -> Tensor:
    """How far ``adapter`` is from the identity: ``||W - I||^2`` (+ ``||b||^2``) for a square linear
    adapter, else ``mean ||f(q) - q||^2`` over ``queries``."""
    from adapterkit.adapters import LinearLayer

    if isinstance(adapter, LinearLayer) and adapter.in_features == adapter.out_features:
        eye = torch.eye(adapter.in_features, device=queries.device)
        penalty = (adapter.linear.weight - eye).pow(2).sum()
        return penalty + (adapter.linear.bias.pow(2).sum() if adapter.bias else 0.0)
    return (adapter(queries) - queries).pow(2).sum(-1).mean()


def start_penalty(adapter: nn.Module, start: Dict[str, Tensor]) -> Tensor:
    """How far ``adapter``'s weights are from ``start`` (a state dict): ``sum ||p - p_start||^2``.

    For a square linear adapter started at the identity this is ``identity_penalty``; a cross-model
    adapter starts at a fitted map (``cross_model.fit_linear_map``), and training stays near it."""
    total = torch.zeros((), device=next(adapter.parameters()).device)
    for name, param in adapter.named_parameters():
        total = total + (param - start[name].to(param.device)).pow(2).sum()
    return total
