"""``EmbeddingAdapterFinetuneEngine``: train a query adapter on cached base embeddings.

Every query and chunk is embedded by the base model once (through the disk cache); training then
runs on tensors, so an epoch takes milliseconds instead of re-embedding every text every epoch.
The loss is MultipleNegativesRankingLoss: cosine similarity times ``scale``, softmax over the
positive and the negatives (the other positives in the batch, or the whole frozen corpus).
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from tqdm.auto import tqdm

from adapterkit.adapter_embedding import AdapterEmbeddingModel, apply_adapter, infer_device
from adapterkit.adapters import ADAPTER_CLASSES, INNER_DIR, BaseAdapter, CorpusMemory, LinearLayer, check_adapter_dim, holds_memory, load_adapter
from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model
from adapterkit.eval_utils import exact_search

# LlamaIndex's walkthrough recipe: pairs in order, in-batch negatives, lr 2e-5, 10% linear warm-up,
# no validation. Use as EmbeddingAdapterFinetuneEngine(train, model, epochs=4, **LLAMAINDEX_RECIPE).
LLAMAINDEX_RECIPE: Dict[str, Any] = dict(
    batch_size=10, optimizer_params={"lr": 2e-5}, scale=20.0, negatives="in_batch", shuffle=False,
    no_duplicates=False, identity_reg=0.0, val_fraction=0.0,
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def chunk_sentences(text: str, min_words: int = 6) -> List[str]:
    """The sentences of ``text`` (split after . ! ?) with at least ``min_words`` words."""
    return [x.strip() for x in _SENTENCE.split(" ".join(text.split())) if len(x.split()) >= min_words]


def pseudo_queries(
    corpus: Dict[str, str], per_chunk: int = 4, words: Optional[Tuple[int, int]] = None, min_words: int = 6,
    max_sentences: int = 2, seed: int = 0,
) -> List[tuple]:
    """Label-free training pairs from a target corpus: a piece of a chunk as the query, the chunk as positive.

    Args:
        corpus: ``{chunk id: text}``.
        per_chunk: pairs drawn from each chunk.
        words: ``(shortest, longest)``: the query is a window of that many consecutive words
            (question-sized), at a random place. None: one to ``max_sentences`` whole sentences of at
            least ``min_words`` words instead.
        seed: the same seed gives the same pairs.

    Returns ``[(query text, chunk id)]``; chunks too short for one query give none.
    """
    if words is not None and not 1 <= words[0] <= words[1]:
        raise ValueError(f"words must be (shortest, longest) with 1 <= shortest <= longest, got {words}.")
    rng = random.Random(seed)
    pairs = []
    for doc_id, text in corpus.items():
        if words is not None:
            tokens = text.split()
            if len(tokens) < words[0]:
                continue
            for _ in range(per_chunk):
                n = min(rng.randint(*words), len(tokens))
                start = rng.randrange(len(tokens) - n + 1)
                pairs.append((" ".join(tokens[start : start + n]), doc_id))
            continue
        sentences = chunk_sentences(text, min_words)
        for start in rng.sample(range(len(sentences)), min(per_chunk, len(sentences))):
            pairs.append((" ".join(sentences[start : start + rng.randint(1, max_sentences)]), doc_id))
    return pairs


def generated_pseudo_queries(corpus: Dict[str, str], llm: Any, per_chunk: int, output_path: Path, show_progress: bool = True) -> List[tuple]:
    """Label-free training pairs asked of an LLM: ``[(question, chunk id)]``, resumable at ``output_path``."""
    from adapterkit.questions import generate_qa_embedding_pairs  # LLM machinery only when asked for

    generated = generate_qa_embedding_pairs(corpus, llm=llm, num_questions_per_chunk=per_chunk, output_path=output_path, verbose=show_progress)
    return [(question, generated.relevant_docs[qid][0]) for qid, question in generated.queries.items()]


@dataclass
class _Group:
    """One corpus with its training pairs, as tensors: the unit for corpus-wide negatives."""

    name: str
    queries: np.ndarray  # (n, d) base query embeddings
    positives: np.ndarray  # (n,) row of each query's positive in docs
    docs: np.ndarray  # (m, d) base chunk embeddings
    other_relevant: List[List[int]]  # further relevant rows per query (kept out of the negatives)
    hard: Optional[np.ndarray] = None  # (n, h) mined hard-negative rows per query, for in-batch training
    train_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def split(self, val_fraction: float, rng: np.random.Generator) -> None:
        """Hold out whole chunks (all their queries) so validation never sees a training chunk."""
        chunks = np.unique(self.positives)
        n_val = int(round(len(chunks) * val_fraction)) if len(chunks) > 1 else 0
        held = set(rng.permutation(chunks)[:n_val].tolist())
        is_val = np.array([p in held for p in self.positives], dtype=bool)
        self.train_idx, self.val_idx = np.where(~is_val)[0], np.where(is_val)[0]


def mine_hard_negatives(group: "_Group", k: int, margin: float = 0.05) -> np.ndarray:
    """The ``k`` chunks the base model ranks highest for each query, its relevant chunks excluded.

    False-negative guard: a chunk scoring within ``margin`` of the query's positive (cosine) is
    skipped, since a chunk that close is as likely an unlabelled answer as a wrong one.
    """
    q = torch.nn.functional.normalize(torch.as_tensor(group.queries), dim=-1)
    d = torch.nn.functional.normalize(torch.as_tensor(group.docs), dim=-1)
    scores = q @ d.T
    rows = torch.arange(len(q))
    pos = scores[rows, torch.as_tensor(group.positives)]
    scores[rows, torch.as_tensor(group.positives)] = -math.inf
    for i, extra in enumerate(group.other_relevant):
        scores[i, extra] = -math.inf
    scores[scores >= (pos - margin)[:, None]] = -math.inf
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()


def no_duplicate_batches(positives: Union[Sequence[int], Dict[int, int]], batch_size: int, order: Sequence[int]) -> List[List[int]]:
    """Split ``order`` into batches in which no positive doc appears twice (it would be its own negative)."""
    remaining = list(order)
    batches: List[List[int]] = []
    while remaining:
        batch, seen, skipped, j = [], set(), [], 0
        for j, i in enumerate(remaining):  # stops once the batch is full: linear in the data overall
            if positives[i] in seen:
                skipped.append(i)
                continue
            batch.append(i)
            seen.add(positives[i])
            if len(batch) == batch_size:
                break
        batches.append(batch)
        remaining = skipped + remaining[j + 1 :]
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

    Defaults were chosen on the Lyft training set only, never on Uber questions: shuffled batches of
    32 without duplicate positives, softmax over the whole frozen corpus, scale 30, a 0.03 pull
    toward the identity, AdamW lr 3e-3, 8 epochs (``benchmarks/select_defaults.py``, held-out Lyft
    chunks); 20% of the training chunks held out, the best epoch kept only if it beats the identity
    by a standard error, then a refit on every pair. With an ``unlabeled_corpus``: lr 1e-3, 16
    epochs, 4 pseudo-queries per chunk (``benchmarks/select_on_lyft_halves.py``: part of Lyft
    labelled, the rest searched), and the saved adapter carries a ``CorpusMemory`` of that corpus's
    sentences (weight 0.25, temperature 100, chosen the same way). See the README for which choices
    the Uber val set informed.
    ``**LLAMAINDEX_RECIPE`` gives the walkthrough's recipe.

    Args:
        dataset: training pairs (the first relevant doc of each query is its positive).
        embed_model: any LlamaIndex ``BaseEmbedding`` or a spec (``"default"``); never fine-tuned itself.
        batch_size: queries per step.
        epochs: passes over the training pairs (the best one on held-out chunks is kept); default 8,
            or 16 with an ``unlabeled_corpus``.
        adapter_model: a ``BaseAdapter`` to train; default ``LinearLayer(dim, dim, bias)`` (identity).
        dim: embedding dimension; default: read off the embeddings.
        device: torch device; default CUDA when present, else CPU.
        model_output_path: where the final adapter is saved.
        model_checkpoint_path: where ``step_N/`` checkpoints go (None: no checkpoints).
        checkpoint_save_steps: steps between checkpoints.
        verbose: print the loss (and validation MRR) per epoch.
        bias: learn a bias in the default linear adapter.
        optimizer_class: a torch optimiser class.
        optimizer_params: its keyword arguments (default ``{"lr": 3e-3}``, ``{"lr": 1e-3}`` with an
            ``unlabeled_corpus``).
        scale: inverse temperature on cosine similarities in the loss.
        negatives: ``"corpus"`` (every chunk of the query's corpus, other relevant chunks excluded)
            or ``"in_batch"`` (the other positives in the batch, as LlamaIndex).
        hard_negatives: with ``"in_batch"``, add this many mined hard negatives per query: the
            chunks the base model ranks highest, minus relevant ones and any within 0.05 cosine of
            the positive (``mine_hard_negatives``). ``"corpus"`` already has every chunk in the softmax.
        identity_reg: weight of ``||W - I||^2`` (linear adapters) or ``mean ||f(q) - q||^2`` (others).
        val_fraction: share of training chunks held out to pick the best epoch (0: keep the last). An
            epoch replaces the identity only if its held-out gain exceeds one standard error.
        refit: once an epoch is chosen, train again from the start on every pair (held-out chunks
            included, same schedule and seed) and keep that epoch. Nothing is refit when the
            identity was kept. Checkpoints then come from the refit run, and no chunk stays held
            out (``validation_mrr`` is nan, and a later ``finetune()`` trains on without selecting).
        unlabeled_corpus: ``{id: text}`` or LlamaIndex nodes of the corpus you will search; label-free
            pseudo-queries (sentences of each chunk) are trained on beside ``dataset``.
        pseudo_queries_per_chunk: pseudo-queries drawn from each unlabeled chunk.
        pseudo_query_words: None: each pseudo-query is one or two whole sentences of its chunk. A
            ``(shortest, longest)`` pair, e.g. ``(8, 24)``: a window of that many consecutive words
            (question-sized); better on both Lyft splits, not on the Uber val set (README).
        pseudo_query_llm: None: pseudo-queries are sentences of the chunk. An LLM (a LlamaIndex
            ``LLM`` or a ``resolve_llm`` spec such as ``"openai:gpt-4o-mini"``) asks it for that many
            questions per chunk instead (``generate_qa_embedding_pairs``), kept in
            ``<model_output_path>/pseudo_queries.json``; an interrupted generation resumes there.
        corpus_memory: with an ``unlabeled_corpus``, save the trained adapter inside a
            ``CorpusMemory``: every sentence of the corpus (embedded once, as a query) points at its
            chunk, and a query close to a sentence is pulled toward that chunk. ``self.model`` stays
            the trained adapter; the saved folder (and ``get_finetuned_model``) holds the memory.
            Chunks without a sentence of 6+ words have no key; with none at all the adapter is saved
            alone. ``step_N`` checkpoints hold the adapter alone.
        memory_weight: how far the memory pulls a query (``CorpusMemory.weight``).
        memory_temperature: sharpness of the sentence match (``CorpusMemory.temperature``).
        warmup_ratio: fraction of steps with linearly rising learning rate, then linear decay.
        max_grad_norm: gradient clipping.
        shuffle: shuffle pairs each epoch (seeded).
        no_duplicates: keep two queries of the same chunk out of one batch.
        seed: seeds splitting, sampling and shuffling; same seed, same adapter on CPU.
        cache: embedding cache (an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``).
        show_progress: tqdm bars for embedding and epochs.
        num_threads: torch CPU threads while training (None: torch's setting). Adapters are tiny, so
            one thread is fastest; on a 2-core machine with another job running, 2 threads made the
            default Lyft run take 53 s instead of 0.6 s (threads spin waiting for each other).

    Example::

        engine = EmbeddingAdapterFinetuneEngine(train_dataset, resolve_embed_model("default"),
                                                unlabeled_corpus=val_dataset.corpus)
        engine.finetune()
        model = engine.get_finetuned_model()
    """

    def __init__(
        self,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        batch_size: int = 32,
        epochs: Optional[int] = None,
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
        scale: float = 30.0,
        negatives: str = "corpus",
        hard_negatives: int = 0,
        identity_reg: float = 0.03,
        val_fraction: float = 0.2,
        refit: bool = True,
        unlabeled_corpus: Union[Dict[str, str], Sequence[BaseNode], None] = None,
        pseudo_queries_per_chunk: int = 4,
        pseudo_query_words: Optional[Tuple[int, int]] = None,
        pseudo_query_llm: Any = None,
        corpus_memory: bool = True,
        memory_weight: float = 0.25,
        memory_temperature: float = 100.0,
        warmup_ratio: float = 0.1,
        max_grad_norm: float = 1.0,
        shuffle: bool = True,
        no_duplicates: bool = True,
        seed: int = 0,
        cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
        show_progress: bool = True,
        num_threads: Optional[int] = 1,
    ) -> None:
        if negatives not in ("in_batch", "corpus"):
            raise ValueError(f"negatives must be 'in_batch' or 'corpus', got {negatives!r}.")
        if epochs is None:
            epochs = 16 if unlabeled_corpus is not None else 8
        if batch_size < 1 or epochs < 0:
            raise ValueError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size} and {epochs}.")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        self.dataset = dataset.validate("the training dataset")
        self.embed_model = resolve_embed_model(embed_model)
        self.batch_size, self.epochs, self.verbose = batch_size, epochs, verbose
        self.optimizer_class = optimizer_class
        # Twice the pairs (and pseudo-queries that are easy to match) want smaller steps.
        self.optimizer_params = {"lr": 1e-3 if unlabeled_corpus is not None else 3e-3, **(optimizer_params or {})}
        self.scale, self.negatives, self.identity_reg = scale, negatives, identity_reg
        self.hard_negatives = hard_negatives
        self.val_fraction, self.refit = val_fraction, refit
        self.warmup_ratio, self.max_grad_norm = warmup_ratio, max_grad_norm
        self.shuffle, self.no_duplicates, self.seed = shuffle, no_duplicates, seed
        self.checkpoint_save_steps = checkpoint_save_steps
        self.memory_weight, self.memory_temperature = memory_weight, memory_temperature
        self._model_output_path = Path(model_output_path)
        self._model_checkpoint_path = Path(model_checkpoint_path) if model_checkpoint_path else None
        self._cache, self._show_progress, self.num_threads = cache, show_progress, num_threads
        self._target_device = infer_device(device)
        self.loss_history: List[float] = []  # one value per optimiser step
        self.epoch_loss: List[float] = []  # mean loss per epoch
        self.val_mrr: List[float] = []  # held-out MRR@10 before training (index 0) and after each epoch
        self.best_epoch: Optional[int] = None  # 0 means the identity start was kept
        self._memory: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None  # (sentence keys, chunks, owner rows)

        # Embed every text once (cached across runs), then train on tensors.
        self.groups = [self._group("train", dataset.queries, dataset.corpus, dataset.relevant_docs)]
        if unlabeled_corpus is not None:
            corpus = _as_corpus(unlabeled_corpus)
            if pseudo_query_llm is None:
                pairs = pseudo_queries(corpus, pseudo_queries_per_chunk, words=pseudo_query_words, seed=seed)
            else:
                pairs = generated_pseudo_queries(corpus, pseudo_query_llm, pseudo_queries_per_chunk, self._model_output_path / "pseudo_queries.json", show_progress)
            if not pairs:
                need = ("a sentence of 6+ words" if pseudo_query_words is None else f"{pseudo_query_words[0]}+ words")
                raise DatasetError(f"unlabeled_corpus gave no pseudo-queries: no chunk has {need}"
                                   + (" (or the LLM gave no usable question; see pseudo_queries.json.progress.jsonl)." if pseudo_query_llm is not None else "."))
            queries = {f"pseudo-{i}": q for i, (q, _) in enumerate(pairs)}
            relevant = {f"pseudo-{i}": [d] for i, (_, d) in enumerate(pairs)}
            self.groups.append(self._group("unlabeled", queries, corpus, relevant))
            if corpus_memory:
                self._memory = self._memory_vectors(corpus, self.groups[-1].docs)
        rng = np.random.default_rng(seed)
        for group in self.groups:
            group.split(val_fraction, rng)
            if hard_negatives and negatives == "in_batch":
                group.hard = mine_hard_negatives(group, hard_negatives)

        d = self.groups[0].docs.shape[1]
        self.dim = dim or d
        if self.dim != d:
            raise ValueError(f"dim={dim} but {self.embed_model.model_name} gives {d}-dimensional embeddings; drop dim or fix it.")
        self.model: BaseAdapter = adapter_model if adapter_model is not None else LinearLayer(self.dim, self.dim, bias=bias)
        check_adapter_dim(self.model, self.dim)

    def _group(self, name: str, queries: Dict[str, str], corpus: Dict[str, str], relevant: Dict[str, List[str]]) -> _Group:
        qids, doc_ids = list(queries), list(corpus)
        pos = {d: i for i, d in enumerate(doc_ids)}
        return _Group(
            name=name,
            queries=embed_texts(self.embed_model, [queries[q] for q in qids], "query", cache=self._cache, show_progress=self._show_progress),
            positives=np.array([pos[relevant[q][0]] for q in qids]),
            docs=embed_texts(self.embed_model, [corpus[d] for d in doc_ids], "text", cache=self._cache, show_progress=self._show_progress),
            other_relevant=[[pos[d] for d in relevant[q][1:]] for q in qids],
        )

    def _memory_vectors(self, corpus: Dict[str, str], docs: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(keys, chunks, owner) for a ``CorpusMemory``: each sentence's query embedding, ``docs``, each sentence's row."""
        sentences, rows = [], []
        for row, text in enumerate(corpus.values()):  # docs follows the corpus's order
            found = chunk_sentences(text)
            sentences += found
            rows += [row] * len(found)
        if not sentences:
            return None
        keys = embed_texts(self.embed_model, sentences, "query", cache=self._cache, show_progress=self._show_progress)
        return keys, docs, np.asarray(rows)

    def saved_adapter(self) -> BaseAdapter:
        """What ``finetune`` saves: the trained adapter, inside a ``CorpusMemory`` when there is one."""
        if self._memory is None:
            return self.model
        return CorpusMemory(self.model, *self._memory, weight=self.memory_weight, temperature=self.memory_temperature)

    @classmethod
    def from_model_path(
        cls,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        model_path: Union[str, os.PathLike],
        model_cls: Optional[Type[BaseAdapter]] = None,
        **kwargs: Any,
    ) -> "EmbeddingAdapterFinetuneEngine":
        """Continue training a saved adapter.

        Of a saved ``CorpusMemory`` the adapter inside it trains on; the memory is saved again around
        it, unless an ``unlabeled_corpus`` builds a new one or ``corpus_memory=False`` drops it.
        """
        model = load_adapter(model_path, model_cls)
        memory = model if isinstance(model, CorpusMemory) else None
        engine = cls(dataset, embed_model, adapter_model=memory.inner if memory else model, **kwargs)
        if memory is not None and engine._memory is None and kwargs.get("corpus_memory", True):
            engine._memory = (memory.keys.cpu().numpy(), memory.chunks.cpu().numpy(), memory.owner.cpu().numpy())
            engine.memory_weight, engine.memory_temperature = memory.weight, memory.temperature
        return engine

    def _epoch_batches(self, generator: torch.Generator) -> List[tuple]:
        """``[(group, [query rows])]`` for one epoch: each group's batches, interleaved at random."""
        batches = []
        for g, group in enumerate(self.groups):
            idx = group.train_idx
            order = idx[torch.randperm(len(idx), generator=generator).numpy()] if self.shuffle else idx
            if self.no_duplicates:
                found = no_duplicate_batches({i: group.positives[i] for i in idx}, self.batch_size, order.tolist())
            else:
                found = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
            batches.extend((g, b) for b in found)
        if self.shuffle and len(self.groups) > 1:
            perm = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def _loss(self, loss_model: "MultipleNegativesRankingLoss", group: _Group, rows: List[int], tensors: tuple) -> torch.Tensor:
        queries, docs = tensors
        q = queries[rows]
        if self.negatives == "in_batch":
            cand_rows = list(group.positives[rows])
            if group.hard is not None:
                cand_rows += group.hard[rows].ravel().tolist()
            mask = None
            if len(cand_rows) > len(rows) or any(group.other_relevant[i] for i in rows):
                # A candidate relevant to a query must not count as its negative (only its own column is the label).
                relevant = [{group.positives[i], *group.other_relevant[i]} for i in rows]
                mask = torch.tensor([[c in relevant[r] and c != cand_rows[r] for c in cand_rows] for r in range(len(rows))], device=docs.device)
            cand = docs[torch.as_tensor(cand_rows, device=docs.device)]
            loss = loss_model(q, cand, torch.arange(len(rows), device=docs.device), mask)
        else:
            labels = torch.as_tensor(group.positives[rows], device=docs.device)
            mask = None
            if any(group.other_relevant[i] for i in rows):  # false-negative guard
                mask = torch.zeros(len(rows), len(docs), dtype=torch.bool, device=docs.device)
                for r, i in enumerate(rows):
                    mask[r, group.other_relevant[i]] = True
            loss = loss_model(q, docs, labels, mask)
        if self.identity_reg:
            loss = loss + self.identity_reg * self._identity_penalty(q)
        return loss

    def _identity_penalty(self, q: torch.Tensor) -> torch.Tensor:
        model = self.model
        if isinstance(model, LinearLayer) and model.in_features == model.out_features:
            eye = torch.eye(model.in_features, device=q.device)
            penalty = (model.linear.weight - eye).pow(2).sum()
            return penalty + (model.linear.bias.pow(2).sum() if model.bias else 0.0)
        return (model(q) - q).pow(2).sum(-1).mean()

    def validation_rr(self, k: int = 10, adapter: Optional[torch.nn.Module] = None, groups: Optional[List[_Group]] = None) -> np.ndarray:
        """Reciprocal rank (0 past ``k``) of each held-out query, ranked among the held-out chunks only.

        ``adapter`` (default ``self.model``) maps the queries; ``groups`` (default all) picks whose.

        Training chunks are left out of the candidates on purpose: an adapter pulls queries toward
        the chunks it was trained on, which would punish it on held-out queries for a reason that
        does not exist on a new corpus (where no chunk was seen in training).
        """
        rr = []
        for group in self.groups if groups is None else groups:
            if not len(group.val_idx):
                continue
            chunks = np.unique(group.positives[group.val_idx])
            row = {c: i for i, c in enumerate(chunks)}
            q = apply_adapter(self.model if adapter is None else adapter, group.queries[group.val_idx])
            rel = [[row[group.positives[i]], *(row[o] for o in group.other_relevant[i] if o in row)] for i in group.val_idx]
            _, _, ranks = exact_search(q, group.docs[chunks], 1, rel)
            rr.extend(1.0 / r.min() if r.min() <= k else 0.0 for r in ranks)
        return np.asarray(rr)

    def validation_mrr(self, k: int = 10) -> float:
        """Mean of ``validation_rr``: held-out MRR@k of the current adapter."""
        rr = self.validation_rr(k)
        return float(rr.mean()) if len(rr) else math.nan

    def finetune(self, **train_kwargs: Any) -> None:
        """Train ``self.model``, keep the best epoch on held-out chunks, save to ``model_output_path``."""
        for key, value in train_kwargs.items():  # LlamaIndex passes training options here too
            if key not in _TRAINING_OPTIONS:
                known = hasattr(self, key) or key in ("val_fraction", "unlabeled_corpus", "pseudo_queries_per_chunk", "corpus_memory")
                raise TypeError(f"finetune() cannot set {key!r}: it shapes the data prepared in __init__; pass it to "
                                f"EmbeddingAdapterFinetuneEngine(...)." if known else f"finetune() got an unknown option {key!r}.")
            setattr(self, key, value)
        if not isinstance(self.epochs, int) or self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be an int >= 0 and batch_size >= 1, got {self.epochs!r} and {self.batch_size!r}.")
        threads = torch.get_num_threads()
        if self.num_threads and self._target_device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            self._train()
        finally:
            torch.set_num_threads(threads)

    def _train(self) -> None:
        self.loss_history, self.epoch_loss, self.val_mrr, self.best_epoch = [], [], [], None  # this call's run only
        initial = copy.deepcopy(self.model.state_dict())
        validate = any(len(g.val_idx) for g in self.groups)
        saved = self._fit(validate=validate)
        if self.refit and validate and self.best_epoch:
            # The held-out chunks chose the epoch; now train on every pair from the same start and keep
            # that epoch, so the held-out fifth of the corpus (and of a target corpus) is learned too.
            # Afterwards nothing is held out any more: every chunk has been trained on, so a held-out
            # score (validation_mrr) would flatter the adapter, and a second finetune() cannot select.
            for g in self.groups:
                g.train_idx, g.val_idx = np.arange(len(g.positives)), np.zeros(0, dtype=int)
            for path in saved:  # checkpoints of the selection run would mix two trajectories
                shutil.rmtree(path, ignore_errors=True)
            self.model.load_state_dict(initial)
            self.loss_history, self.epoch_loss = [], []
            self._fit(validate=False, keep_epoch=self.best_epoch)
        self.model.eval()
        had_memory = holds_memory(self._model_output_path)
        saved = self.saved_adapter()
        saved.save(self._model_output_path)
        if had_memory and not isinstance(saved, CorpusMemory):  # an earlier run's memory: its adapter/ copy is stale
            shutil.rmtree(self._model_output_path / INNER_DIR, ignore_errors=True)

    def _fit(self, validate: bool, keep_epoch: Optional[int] = None) -> List[Path]:
        """One training run over ``self.epochs``; keeps the best held-out epoch (or ``keep_epoch``).

        Returns the checkpoint folders it wrote.
        """
        device = self._target_device
        generator = torch.Generator().manual_seed(self.seed)
        model = self.model.to(device)
        loss_model = MultipleNegativesRankingLoss(model, scale=self.scale)
        tensors = [(torch.as_tensor(g.queries, device=device), torch.as_tensor(g.docs, device=device)) for g in self.groups]
        optimizer = self.optimizer_class(model.parameters(), **self.optimizer_params)
        steps_per_epoch = len(self._epoch_batches(torch.Generator().manual_seed(self.seed)))
        total = max(1, steps_per_epoch * self.epochs)
        warmup = int(total * self.warmup_ratio)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
        )
        if self._model_checkpoint_path is not None:
            self._model_checkpoint_path.mkdir(parents=True, exist_ok=True)
        best_state, best_score = copy.deepcopy(model.state_dict()), -math.inf
        if validate:
            identity_rr = self.validation_rr()
            best_score = float(identity_rr.mean())
            self.val_mrr.append(best_score)
            self.best_epoch = 0
        step, saved = 0, []
        for epoch in tqdm(range(1, self.epochs + 1), desc="Epoch" if keep_epoch is None else "Refit", disable=not self._show_progress):
            model.train()
            losses = []
            for g, rows in self._epoch_batches(generator):
                loss = self._loss(loss_model, self.groups[g], rows, tensors[g])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                losses.append(loss.item())
                if self._model_checkpoint_path is not None and step % self.checkpoint_save_steps == 0:
                    saved.append(self._model_checkpoint_path / f"step_{step}")
                    model.save(saved[-1])
            self.loss_history.extend(losses)
            self.epoch_loss.append(float(np.mean(losses)) if losses else math.nan)
            message = f"> [{'Epoch' if keep_epoch is None else 'Refit epoch'} {epoch}] mean loss {self.epoch_loss[-1]:.4f}"
            if keep_epoch == epoch:
                best_state = copy.deepcopy(model.state_dict())
            if validate:
                rr = self.validation_rr()
                score = float(rr.mean())
                self.val_mrr.append(score)
                message += f", held-out MRR@10 {score:.4f}"
                # Leave the identity only for a gain larger than its standard error over the held-out
                # queries: a small held-out set lets a damaging epoch win by luck.
                gain = rr - identity_rr
                clear = gain.mean() > gain.std(ddof=1) / math.sqrt(len(gain)) if len(gain) > 1 else gain.mean() > 0
                if score > best_score and clear:
                    best_state, best_score, self.best_epoch = copy.deepcopy(model.state_dict()), score, epoch
            if self.verbose:
                print(message)
        if validate or keep_epoch is not None:
            model.load_state_dict(best_state)
        return saved

    def get_finetuned_model(self, adapter_cls: Optional[Type[BaseAdapter]] = None, **model_kwargs: Any) -> AdapterEmbeddingModel:
        """The trained adapter over the base model, as a ``BaseEmbedding`` (loaded from ``model_output_path``)."""
        if not (self._model_output_path / "config.json").is_file():
            raise FileNotFoundError(f"No adapter at {self._model_output_path}: call finetune() first.")
        model_kwargs.setdefault("cache", self._cache)
        model_kwargs.setdefault("device", str(self._target_device))  # where it was trained, not wherever a GPU is
        return AdapterEmbeddingModel(
            self.embed_model, self._model_output_path, **model_kwargs,
            adapter_cls=adapter_cls or (None if ADAPTER_CLASSES.get(type(self.model).__name__) is type(self.model) else type(self.model)),
        )


# What finetune(**kwargs) may change: options read while training, not when the data were prepared.
_TRAINING_OPTIONS = {
    "epochs", "batch_size", "optimizer_class", "optimizer_params", "scale", "identity_reg", "refit", "warmup_ratio",
    "max_grad_norm", "shuffle", "no_duplicates", "seed", "verbose", "checkpoint_save_steps", "num_threads",
    "memory_weight", "memory_temperature",
}


def _as_corpus(corpus: Union[Dict[str, str], Sequence[BaseNode]]) -> Dict[str, str]:
    if isinstance(corpus, dict):
        return {str(k): str(v) for k, v in corpus.items()}
    return {n.node_id: n.get_content(metadata_mode=MetadataMode.NONE) for n in corpus}
