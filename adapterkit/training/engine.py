"""``EmbeddingAdapterFinetuneEngine``: train a query adapter on cached base embeddings.

Every query and chunk is embedded by the base model once (through the disk cache); training then
runs on tensors, so an epoch takes milliseconds instead of re-embedding every text every epoch.
A run: (1) train with whole chunks held out and keep the epoch that beats the identity start by more
than a standard error (``selection``); (2) with ``refit``, train again from the start on every pair
and keep that epoch; (3) save the adapter, and a ``CorpusMemory`` of a target corpus beside it.
Checkpoints carry the whole run state (``checkpoints``), so an interrupted run resumes exactly.
The engine holds the run; what it trains on is built by ``training_data``, the searched corpus's
memories by ``memories``, and each pass by ``loop.train_pass``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, Union, cast

import numpy as np
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode

from adapterkit.adapter_embedding import AdapterEmbeddingModel, write_base_model
from adapterkit.adapters import (
    ADAPTER_CLASSES,
    BaseAdapter,
    LinearLayer,
    check_adapter_dim,
    infer_device,
    load_adapter,
)
from adapterkit.cache import EmbeddingCache
from adapterkit.cross_model import CROSS_MODEL_FILE, write_identity
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset, node_texts
from adapterkit.embeddings import resolve_embed_model
from adapterkit.logs import show_messages
from adapterkit.memory.corpus_memory import MEMORY_DIR, CorpusMemory, memory_folders
from adapterkit.training import selection
from adapterkit.training.checkpoints import (
    RunState,
    latest_state,
    remove_run_checkpoints,
    run_fingerprint,
)
from adapterkit.training.config import FIXED_AT_CONSTRUCTION, RUN_OPTIONS, FinetuneConfig, OptionNameError, check_run, same_value
from adapterkit.training.cross_start import fit_start_map
from adapterkit.training.loop import train_pass
from adapterkit.training.memories import build_memories, questions_on_target
from adapterkit.training.sampling import TrainingGroup, count_steps
from adapterkit.training.selection import TrainingDivergedError  # noqa: F401 (its home for callers of the engine)
from adapterkit.training.training_data import build_training_data

# LlamaIndex's walkthrough recipe: pairs in order, in-batch negatives, lr 2e-5, 10% linear warm-up,
# no validation. Use as EmbeddingAdapterFinetuneEngine(train, model, epochs=4, **LLAMAINDEX_RECIPE).
LLAMAINDEX_RECIPE: Dict[str, Any] = dict(
    batch_size=10,
    optimizer_params={"lr": 2e-5},
    scale=20.0,
    negatives="in_batch",
    shuffle=False,
    no_duplicates=False,
    identity_reg=0.0,
    val_fraction=0.0,
    guard=False,
    refit=False,
)


logger = logging.getLogger(__name__)


class EmbeddingAdapterFinetuneEngine:
    """Fine-tune a query adapter over a frozen embedding model (LlamaIndex's call shape).

    Options are the fields of ``FinetuneConfig`` (documented there, with their defaults), passed as
    keyword arguments; ``**LLAMAINDEX_RECIPE`` gives the walkthrough's recipe.

    Args:
        dataset: training pairs (the first relevant doc of each query is its positive).
        embed_model: any LlamaIndex ``BaseEmbedding`` or a spec (``"default"``); never fine-tuned itself.
        adapter_model: a ``BaseAdapter`` to train; default ``LinearLayer(dim, dim, bias)`` (identity).
        dim: embedding dimension; default: read off the embeddings.
        device: torch device; default CUDA when present, else CPU.
        model_output_path: where the trained adapter is saved (and its corpus memories, in ``memory/``).
        model_checkpoint_path: where ``step_N/`` checkpoints go (None: none). Each holds the adapter
            and the whole run state: ``finetune()`` after an interrupt resumes from the newest one of
            the same run (same data, options and start) and ends with the weights of an
            uninterrupted run. Without checkpoints an interrupted run restarts from the start.
        bias: learn a bias in the default linear adapter.
        unlabeled_corpus: ``{id: text}`` or LlamaIndex nodes of the corpus you will search; label-free
            pseudo-queries (sentences of each chunk) are trained on beside ``dataset``, and corpus
            memories are saved beside the adapter: its sentences (``corpus_memory``) and, where
            ``dataset``'s relevant chunks are in this corpus, its questions (``question_memory``).
        pseudo_query_llm: None: pseudo-queries are sentences of each chunk. An LLM (a LlamaIndex
            ``LLM`` or a ``resolve_llm`` spec) asks for questions instead, kept (and resumed) in
            ``<model_output_path>/pseudo_queries.json``.
        cache: embedding cache (an ``EmbeddingCache``, a folder, or None for ``$ADAPTERKIT_CACHE_DIR``).
        show_progress: tqdm bars for embedding and epochs.
        index_model: the model that built the index, when it is not ``embed_model`` (None: the same).
            Documents are embedded by it (or read from its store), queries by ``embed_model``, and the
            adapter maps the one into the other: it starts at ``cross_model.fit_linear_map`` fitted on
            ``map_sample`` chunks of the searched corpus embedded by both, then trains as usual (the
            held-out guard's "start" is that map). ``embed_model`` never embeds the rest of the corpus.
        target_questions: labelled questions about ``unlabeled_corpus`` that are evidence, not training pairs
            (your own few): they become question-memory keys and choose its pull (``memory_choice``).
        options: ``FinetuneConfig`` fields (``epochs``, ``batch_size``, ``optimizer_params``, ...).

    Example::

        engine = EmbeddingAdapterFinetuneEngine(train_dataset, "default", unlabeled_corpus=val_dataset.corpus)
        engine.finetune()
        model = engine.get_finetuned_model()
    """

    def __init__(
        self,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        adapter_model: Optional[BaseAdapter] = None,
        dim: Optional[int] = None,
        device: Optional[str] = None,
        model_output_path: Union[str, os.PathLike] = "model_output",
        model_checkpoint_path: Optional[Union[str, os.PathLike]] = None,
        bias: bool = False,
        unlabeled_corpus: Union[Mapping[str, str], Sequence[BaseNode], None] = None,
        pseudo_query_llm: Any = None,
        cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
        show_progress: bool = True,
        index_model: Union[BaseEmbedding, str, None] = None,
        target_questions: Optional[EmbeddingQAFinetuneDataset] = None,
        **options: Any,
    ) -> None:
        self.config = FinetuneConfig().updated(**options)
        self.dataset = dataset.validate("the training dataset")
        self._given: Dict[str, Any] = dict(
            unlabeled_corpus=unlabeled_corpus is not None,
            index_model=index_model is not None,  # what check_run weighs
            checkpoints=bool(model_checkpoint_path),
            target_questions=target_questions is not None,
            adapter_model=adapter_model is not None,
            bias=bias,
            pseudo_query_llm=pseudo_query_llm is not None,
        )
        self._explicit = set(options)  # what the caller set: check_run weighs these, never a default
        check_run(self.config, self._explicit, **self._given)
        self.target_questions = target_questions.validate("target_questions") if target_questions is not None else None
        self.embed_model = resolve_embed_model(embed_model)
        self.index_model = resolve_embed_model(index_model) if index_model is not None else None
        self.map_info: Optional[Dict[str, Any]] = None  # a cross-model run: the sample that fitted its start map
        self.map_texts: List[str] = []  # cross-model runs: the training query texts the start map was fitted on
        self._model_output_path = Path(model_output_path)
        self._model_checkpoint_path = Path(model_checkpoint_path) if model_checkpoint_path else None
        self._cache, self._show_progress = cache, show_progress
        self._target_device = infer_device(device)
        self.loss_history: List[float] = []  # one value per optimiser step
        self.total_steps = 0  # optimiser steps the last training pass was scheduled for
        self.epoch_loss: List[float] = []  # mean loss per epoch
        self.val_mrr: List[float] = []  # held-out MRR@10 before training (index 0) and after each epoch
        self.best_epoch: Optional[int] = None  # 0 means the identity start was kept
        self.memories: Dict[str, CorpusMemory] = {}  # the target corpus's memories, saved beside the adapter
        self.memory_choice: Optional[Dict[str, Any]] = None  # how the question memory's pull was chosen on held-out labelled questions
        self.labels_on_target = False  # whether some labelled questions' chunks are in the target corpus
        self._refitted = False

        # Embed every text once (cached across runs), then train on tensors.
        target = node_texts(unlabeled_corpus) if unlabeled_corpus is not None else None
        where: Dict[str, Any] = dict(index_model=self.index_model, cache=cache, show_progress=show_progress)
        data = build_training_data(
            dataset,
            self.embed_model,
            self.config,
            target=target,
            pseudo_query_llm=pseudo_query_llm,
            output_path=Path(model_output_path),
            **where,
        )
        self.groups = data.groups
        d = self.groups[0].docs.shape[1]
        self.dim = dim or d
        if self.dim != d:
            raise ValueError(
                f"dim={dim} but {(self.index_model or self.embed_model).model_name} gives {d}-dimensional embeddings; drop dim or fix it."
            )
        if self.index_model is not None:  # fitted on training rows only: the held-out chunks judge the start fairly
            held = data.held_out_chunks()
            self.map_texts = data.training_queries()
            searched = target if target is not None else dataset.corpus
            adapter_model, self.map_info = fit_start_map(
                self.embed_model,
                self.index_model,
                self.map_texts,
                {d: t for d, t in searched.items() if d not in held},
                data.doc_vectors,
                self.config.map_sample,
                self.config.seed,
                cache,
                show_progress,
            )
        if target is not None:  # its memories; labelled questions about it are evidence for the question memory
            labelled = [self.dataset] + ([self.target_questions] if self.target_questions is not None else [])
            self.labels_on_target = questions_on_target(labelled, target)
            check_run(self.config, self._explicit, **self._given, questions_on_target=self.labels_on_target)
            self.memories, self.memory_choice = build_memories(
                target,
                self.groups[-1].docs,
                labelled,
                self.groups[0].queries,
                self.embed_model,
                self.config,
                start=adapter_model if self.index_model is not None else None,
                **where,
            )

        self.model: BaseAdapter = adapter_model if adapter_model is not None else LinearLayer(self.dim, self.dim, bias=bias)
        check_adapter_dim(self.model, self.groups[0].queries.shape[1], self.dim)
        self._start = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}  # every run starts here

    @classmethod
    def from_model_path(
        cls,
        dataset: EmbeddingQAFinetuneDataset,
        embed_model: Union[BaseEmbedding, str],
        model_path: Union[str, os.PathLike],
        model_cls: Optional[Type[BaseAdapter]] = None,
        **kwargs: Any,
    ) -> "EmbeddingAdapterFinetuneEngine":
        """Continue training a saved adapter (it is the start of every ``finetune()`` run)."""
        if kwargs.get("index_model") is not None:
            raise ValueError(
                "from_model_path continues a saved adapter, and a run with an index_model starts at the map fitted "
                "between the two models: train one with EmbeddingAdapterFinetuneEngine(dataset, embed_model, "
                "index_model=...), whose labelled questions and pseudo-queries refine that map."
            )
        return cls(dataset, embed_model, adapter_model=load_adapter(model_path, model_cls), **kwargs)

    # ------------------------------------------------------------------ held-out scores

    def validation_rr(
        self, k: int = 10, adapter: Optional[torch.nn.Module] = None, groups: Optional[List[TrainingGroup]] = None
    ) -> np.ndarray:
        """Reciprocal rank (0 past ``k``) of each held-out query (``selection.validation_rr``).

        ``adapter`` (default ``self.model``) maps the queries; ``groups`` (default all) picks whose.
        Empty after a refit: every chunk has been trained on, so a held-out score would flatter.
        """
        if self._refitted:
            return np.zeros(0)
        return selection.validation_rr(self.model if adapter is None else adapter, self.groups if groups is None else groups, k)

    def validation_mrr(self, k: int = 10) -> float:
        """Mean of ``validation_rr``: held-out MRR@k of the current adapter (nan when nothing is held out)."""
        rr = self.validation_rr(k)
        return float(rr.mean()) if len(rr) else math.nan

    # ------------------------------------------------------------------ training

    def finetune(self, **changes: Any) -> None:
        """Train from the start adapter, keep the best held-out epoch, save to ``model_output_path``.

        Keyword arguments change training options for this and later calls (``FinetuneConfig``
        fields, as LlamaIndex's ``finetune(**train_kwargs)``). Each call is a whole run from the same
        start; an interrupted call leaves the adapter at that start (or, with checkpoints, the next
        call resumes the run where it stopped).
        """
        frozen = sorted(k for k in changes if k in FIXED_AT_CONSTRUCTION and not same_value(changes[k], getattr(self.config, k, None)))
        if frozen:
            raise OptionNameError(
                f"finetune() cannot change {frozen}: they shape the data prepared in __init__; "
                "pass them to EmbeddingAdapterFinetuneEngine(...)."
            )
        config = self.config.updated(**changes)
        changed = {k for k in changes if not same_value(changes[k], getattr(self.config, k))}
        check_run(config, changed, **self._given)
        self.config = config
        if self.config.verbose:
            show_messages()
        threads = torch.get_num_threads()
        if self.config.num_threads and self._target_device.type == "cpu":
            torch.set_num_threads(self.config.num_threads)
        try:
            self._run()
        except BaseException:
            self.model.load_state_dict(self._start)  # never half-trained weights taken for a start
            raise
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> None:
        self._refitted = False
        fingerprint = run_fingerprint(
            {k: v for k, v in self.config.as_dict().items() if k in RUN_OPTIONS}, self.model, self._start, self.groups
        )
        state = latest_state(self._model_checkpoint_path, fingerprint)
        if state is None:
            remove_run_checkpoints(self._model_checkpoint_path)  # an earlier run's steps would mix with this one's
            state = RunState(fingerprint)
        elif self.config.verbose:
            logger.info(f"> resuming the {state.phase} run at step {state.step} (epoch {state.epoch}, batch {state.batch})")
        selecting = any(len(g.val_idx) for g in self.groups)
        if state.phase == "select":
            self._fit(state, rows=[g.train_idx for g in self.groups], validate=selecting)
            if not (self.config.refit and selecting and self.best_epoch):
                return self._save()
            # The held-out chunks chose the epoch; now train on every pair from the same start and keep
            # that epoch, so the held-out part of the corpus (and of a target corpus) is learned too.
            remove_run_checkpoints(self._model_checkpoint_path, phase="select")
            state = RunState(fingerprint, phase="refit", keep_epoch=self.best_epoch, best_epoch=self.best_epoch, val_mrr=list(self.val_mrr))
        self._fit(state, rows=[g.all_rows() for g in self.groups], validate=False)
        self._refitted = True
        self._save()

    def _fit(self, state: RunState, rows: List[np.ndarray], validate: bool) -> None:
        """One training pass (``loop.train_pass``); the run's history is read off its state, interrupted or not."""
        config = self.config
        self.total_steps = max(
            1, count_steps(self.groups, rows, config.batch_size, config.shuffle, config.no_duplicates, config.seed, config.epochs)
        )
        try:
            train_pass(
                self.model,
                self._start,
                self.groups,
                rows,
                config,
                state,
                self.total_steps,
                device=self._target_device,
                validation_rr=(lambda adapter: self.validation_rr(adapter=adapter)) if validate else None,
                checkpoint_path=self._model_checkpoint_path,
                near_start=self.index_model is not None,
                show_progress=self._show_progress,
            )
        finally:
            self.loss_history, self.epoch_loss, self.val_mrr, self.best_epoch = (
                state.loss_history,
                state.epoch_loss,
                state.val_mrr,
                state.best_epoch,
            )

    def _save(self) -> None:
        self.model.eval().save(self._model_output_path)
        write_base_model(self._model_output_path, self.embed_model, self.groups[0].queries.shape[1])  # checked when served
        (self._model_output_path / CROSS_MODEL_FILE).unlink(missing_ok=True)  # an earlier cross-model run's record
        if self.index_model is not None:
            info = cast(Dict[str, Any], self.map_info)  # fitted with the start map whenever index_model is given
            write_identity(self._model_output_path, self.embed_model, self.index_model, info["query_dim"], self.dim, info["sample_chunks"])
        memory_dir = self._model_output_path / MEMORY_DIR
        for old in memory_folders(memory_dir):  # an earlier run's memories would be composed with this adapter
            shutil.rmtree(old, ignore_errors=True)
        for name, memory in self.memories.items():  # built with their pulls at construction
            memory.save(memory_dir / name)

    def get_finetuned_model(self, adapter_cls: Optional[Type[BaseAdapter]] = None, **model_kwargs: Any) -> AdapterEmbeddingModel:
        """The trained adapter (with its corpus memory) over the base model, loaded from ``model_output_path``."""
        if not (self._model_output_path / "config.json").is_file():
            raise FileNotFoundError(f"No adapter at {self._model_output_path}: call finetune() first.")
        model_kwargs.setdefault("cache", self._cache)
        model_kwargs.setdefault("device", str(self._target_device))  # where it was trained, not wherever a GPU is
        custom = None if ADAPTER_CLASSES.get(type(self.model).__name__) is type(self.model) else type(self.model)
        if self.index_model is not None:
            model_kwargs.setdefault("index_model", self.index_model)
        return AdapterEmbeddingModel(self.embed_model, self._model_output_path, adapter_cls=adapter_cls or custom, **model_kwargs)
