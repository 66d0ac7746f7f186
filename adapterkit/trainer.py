"""``EmbeddingAdapterFinetuneEngine``: train a query adapter on cached base embeddings.

Every query and chunk is embedded by the base model once (through the disk cache); training then
runs on tensors, so an epoch takes milliseconds instead of re-embedding every text every epoch.
The loss is MultipleNegativesRankingLoss: cosine similarity times ``scale``, softmax over the
positive and the negatives (the other positives in the batch, or the whole frozen corpus).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.adapter_embedding import AdapterEmbeddingModel, infer_device
from adapterkit.adapters import BaseAdapter, LinearLayer, check_adapter_dim
from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model

# LlamaIndex's walkthrough recipe: in order, in-batch negatives, lr 2e-5, 10% linear warm-up.
LLAMAINDEX_RECIPE: Dict[str, Any] = dict(
    batch_size=10, optimizer_params={"lr": 2e-5}, scale=20.0, negatives="in_batch", shuffle=False, no_duplicates=False
)


def no_duplicate_batches(positives: Sequence[int], batch_size: int, order: Sequence[int]) -> List[List[int]]:
    """Split ``order`` into batches in which no positive doc appears twice (it would be its own negative)."""
    remaining = list(order)
    batches: List[List[int]] = []
    while remaining:
        batch, seen, rest = [], set(), []
        for i in remaining:
            if len(batch) < batch_size and positives[i] not in seen:
                batch.append(i)
                seen.add(positives[i])
            else:
                rest.append(i)
        batches.append(batch)
        remaining = rest
    return batches


class MultipleNegativesRankingLoss(torch.nn.Module):
    """Softmax cross-entropy over scaled cosine similarities of adapted queries to documents.

    Args:
        adapter: the query adapter being trained.
        scale: inverse temperature applied to cosine similarities (sentence-transformers uses 20).

    Inputs:
        queries ``(B, d)`` base query embeddings; docs ``(M, d)`` candidate documents; labels ``(B,)``
        index of each query's positive in ``docs``; mask ``(B, M)`` optional, True where a candidate
        is another relevant doc of that query (removed from the negatives).
    """

    def __init__(self, adapter: torch.nn.Module, scale: float = 20.0) -> None:
        super().__init__()
        self.adapter, self.scale = adapter, scale

    def forward(self, queries: torch.Tensor, docs: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        scores = F.normalize(self.adapter(queries), dim=-1) @ F.normalize(docs, dim=-1).T * self.scale
        if mask is not None:
            scores = scores.masked_fill(mask, -1e4)
        return F.cross_entropy(scores, labels)

    def get_config_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale}


class EmbeddingAdapterFinetuneEngine:
    """Fine-tune a query adapter over a frozen embedding model (LlamaIndex's call shape).

    Args:
        dataset: training pairs (the first relevant doc of each query is its positive).
        embed_model: any LlamaIndex ``BaseEmbedding`` or a spec (``"default"``); never fine-tuned itself.
        batch_size: queries per step.
        epochs: passes over the training pairs.
        adapter_model: a ``BaseAdapter`` to train; default ``LinearLayer(dim, dim, bias)`` (identity).
        dim: embedding dimension; default: read off the embeddings.
        device: torch device; default CUDA when present, else CPU.
        model_output_path: where the final adapter is saved.
        model_checkpoint_path: where ``step_N/`` checkpoints go (None: no checkpoints).
        checkpoint_save_steps: steps between checkpoints.
        verbose: print the loss per epoch.
        bias: learn a bias in the default linear adapter.
        optimizer_class: a torch optimiser class.
        optimizer_params: its keyword arguments (default ``{"lr": 2e-5}``).
        scale: cosine-similarity scale in the loss.
        negatives: ``"in_batch"`` (other positives in the batch) or ``"corpus"`` (every chunk in the corpus).
        warmup_ratio: fraction of steps with linearly rising learning rate, then linear decay.
        max_grad_norm: gradient clipping.
        shuffle: shuffle pairs each epoch (seeded).
        no_duplicates: keep two queries of the same chunk out of one batch.
        seed: seeds shuffling; runs with the same seed give the same adapter on CPU.
        cache: embedding cache (an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``).
        show_progress: tqdm bars for embedding and epochs.

    Example::

        engine = EmbeddingAdapterFinetuneEngine(train_dataset, resolve_embed_model("default"), epochs=4)
        engine.finetune()
        model = engine.get_finetuned_model()
    """

    def __init__(
        self,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        batch_size: int = 10,
        epochs: int = 1,
        adapter_model: Optional[BaseAdapter] = None,
        dim: Optional[int] = None,
        device: Optional[str] = None,
        model_output_path: Union[str, os.PathLike] = "model_output",
        model_checkpoint_path: Optional[Union[str, os.PathLike]] = None,
        checkpoint_save_steps: int = 100,
        verbose: bool = False,
        bias: bool = False,
        optimizer_class: Type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_params: Optional[Dict[str, Any]] = None,
        scale: float = 20.0,
        negatives: str = "in_batch",
        warmup_ratio: float = 0.1,
        max_grad_norm: float = 1.0,
        shuffle: bool = True,
        no_duplicates: bool = True,
        seed: int = 0,
        cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
        show_progress: bool = True,
    ) -> None:
        if negatives not in ("in_batch", "corpus"):
            raise ValueError(f"negatives must be 'in_batch' or 'corpus', got {negatives!r}.")
        if batch_size < 1 or epochs < 0:
            raise ValueError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size} and {epochs}.")
        self.dataset = dataset.validate("the training dataset")
        self.embed_model = resolve_embed_model(embed_model)
        self.batch_size, self.epochs, self.verbose = batch_size, epochs, verbose
        self.optimizer_class = optimizer_class
        self.optimizer_params = dict(optimizer_params or {"lr": 2e-5})
        self.scale, self.negatives = scale, negatives
        self.warmup_ratio, self.max_grad_norm = warmup_ratio, max_grad_norm
        self.shuffle, self.no_duplicates, self.seed = shuffle, no_duplicates, seed
        self.checkpoint_save_steps = checkpoint_save_steps
        self._model_output_path = Path(model_output_path)
        self._model_checkpoint_path = Path(model_checkpoint_path) if model_checkpoint_path else None
        self._cache, self._show_progress = cache, show_progress
        self._target_device = infer_device(device)
        self.loss_history: List[float] = []  # one value per optimiser step
        self.epoch_loss: List[float] = []  # mean loss per epoch

        # Embed every training text once (cached across runs), then train on tensors.
        qids = list(dataset.queries)
        self.doc_ids = list(dataset.corpus)
        doc_pos = {d: i for i, d in enumerate(self.doc_ids)}
        self.query_emb = self._embed([dataset.queries[q] for q in qids], "query")
        self.doc_emb = self._embed([dataset.corpus[d] for d in self.doc_ids], "text")
        self.positives = np.array([doc_pos[dataset.relevant_docs[q][0]] for q in qids])
        self.other_relevant = [[doc_pos[d] for d in dataset.relevant_docs[q][1:]] for q in qids]

        self.dim = dim or self.doc_emb.shape[1]
        if self.dim != self.doc_emb.shape[1]:
            raise ValueError(f"dim={dim} but {self.embed_model.model_name} gives {self.doc_emb.shape[1]}-dimensional embeddings; drop dim or fix it.")
        self.model: BaseAdapter = adapter_model if adapter_model is not None else LinearLayer(self.dim, self.dim, bias=bias)
        check_adapter_dim(self.model, self.dim)

    def _embed(self, texts: List[str], kind: str) -> np.ndarray:
        return embed_texts(self.embed_model, texts, kind, cache=self._cache, show_progress=self._show_progress)

    @classmethod
    def from_model_path(
        cls,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        model_path: Union[str, os.PathLike],
        model_cls: Optional[Type[BaseAdapter]] = None,
        **kwargs: Any,
    ) -> "EmbeddingAdapterFinetuneEngine":
        """Continue training a saved adapter."""
        model = (model_cls or LinearLayer).load(model_path)
        return cls(dataset, embed_model, adapter_model=model, **kwargs)

    def _batches(self, generator: torch.Generator) -> List[List[int]]:
        n = len(self.positives)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        if self.no_duplicates:
            return no_duplicate_batches(self.positives, self.batch_size, order)
        return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def _step_inputs(self, batch: List[int], queries: torch.Tensor, docs: torch.Tensor):
        idx = torch.as_tensor(batch)
        if self.negatives == "in_batch":
            pos = torch.as_tensor(self.positives[batch])
            cand = docs[pos]
            labels = torch.arange(len(batch), device=docs.device)
            # Duplicate positives (allowed only with no_duplicates=False) stay in, as in LlamaIndex.
            return queries[idx], cand, labels, None
        labels = torch.as_tensor(self.positives[batch], device=docs.device)
        mask = None
        if any(self.other_relevant[i] for i in batch):  # false-negative guard: other relevant docs
            mask = torch.zeros(len(batch), len(docs), dtype=torch.bool, device=docs.device)
            for row, i in enumerate(batch):
                mask[row, self.other_relevant[i]] = True
        return queries[idx], docs, labels, mask

    def finetune(self, **train_kwargs: Any) -> None:
        """Train ``self.model`` for ``epochs`` and save it to ``model_output_path``."""
        for key, value in train_kwargs.items():  # LlamaIndex passes training options here too
            if not hasattr(self, key):
                raise TypeError(f"finetune() got an unknown option {key!r}.")
            setattr(self, key, value)
        device = self._target_device
        generator = torch.Generator().manual_seed(self.seed)
        model = self.model.to(device)
        loss_model = MultipleNegativesRankingLoss(model, scale=self.scale)
        queries = torch.as_tensor(self.query_emb, device=device)
        docs = torch.as_tensor(self.doc_emb, device=device)
        optimizer = self.optimizer_class(model.parameters(), **self.optimizer_params)
        steps_per_epoch = len(self._batches(torch.Generator().manual_seed(self.seed)))
        total = max(1, steps_per_epoch * self.epochs)
        warmup = int(total * self.warmup_ratio)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
        )
        if self._model_checkpoint_path is not None:
            self._model_checkpoint_path.mkdir(parents=True, exist_ok=True)
        step = 0
        model.train()
        for epoch in tqdm(range(self.epochs), desc="Epoch", disable=not self._show_progress):
            losses = []
            for batch in self._batches(generator):
                loss = loss_model(*self._step_inputs(batch, queries, docs))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                losses.append(loss.item())
                if self._model_checkpoint_path is not None and step % self.checkpoint_save_steps == 0:
                    model.save(self._model_checkpoint_path / f"step_{step}")
            self.loss_history.extend(losses)
            self.epoch_loss.append(float(np.mean(losses)) if losses else math.nan)
            if self.verbose:
                print(f"> [Epoch {epoch}] mean loss {self.epoch_loss[-1]:.4f}")
        model.eval()
        model.save(self._model_output_path)

    def get_finetuned_model(self, adapter_cls: Optional[Type[BaseAdapter]] = None, **model_kwargs: Any) -> AdapterEmbeddingModel:
        """The trained adapter over the base model, as a ``BaseEmbedding`` (loaded from ``model_output_path``)."""
        if not (self._model_output_path / "config.json").is_file():
            raise FileNotFoundError(f"No adapter at {self._model_output_path}: call finetune() first.")
        model_kwargs.setdefault("cache", self._cache)
        return AdapterEmbeddingModel(
            self.embed_model, self._model_output_path, adapter_cls=adapter_cls or type(self.model), **model_kwargs
        )
