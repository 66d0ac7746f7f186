"""``EmbeddingAdapterFinetuneEngine``: train a query adapter on cached base embeddings.

Every query and chunk is embedded by the base model once (through the disk cache); training then
runs on tensors, so an epoch takes milliseconds instead of re-embedding every text every epoch.
A run: (1) train with whole chunks held out and keep the epoch that beats the identity start by more
than a standard error (``selection``); (2) with ``refit``, train again from the start on every pair
and keep that epoch; (3) save the adapter, and a ``CorpusMemory`` of a target corpus beside it.
Checkpoints carry the whole run state (``checkpoints``), so an interrupted run resumes exactly.
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
from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.cross_model import CROSS_MODEL_FILE, write_identity
from adapterkit.data.datasets import (
    DatasetError,
    EmbeddingQAFinetuneDataset,
    node_texts,
)
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
from adapterkit.training.memory_choice import choose_memories
from adapterkit.training.pseudo_queries import generated_pseudo_queries, pseudo_queries
from adapterkit.training.sampling import TrainingGroup, count_steps, mine_hard_negatives
from adapterkit.training.selection import TrainingDivergedError  # noqa: F401 (its home for callers of the engine)

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
            (your own few): they become question-memory keys and choose each memory's pull (``memory_choice``).
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
        self._doc_vectors: Dict[str, np.ndarray] = {}  # chunk id -> index-model vector (cross-model runs)
        self._cross_rows: List[tuple] = []  # cross-model runs: each group's query texts and chunk ids
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
        self.memory_choice: Optional[Dict[str, Any]] = None  # how the memories' pulls were chosen on held-out labelled questions
        self.labels_on_target = False  # whether some labelled questions' chunks are in the target corpus
        self._refitted = False

        # Embed every text once (cached across runs), then train on tensors.
        self.groups = [self._group("train", dataset.queries, dataset.corpus, dataset.relevant_docs)]
        target = node_texts(unlabeled_corpus) if unlabeled_corpus is not None else None
        if target is not None:
            self._add_target_corpus(target, pseudo_query_llm)
        d = self.groups[0].docs.shape[1]
        self.dim = dim or d
        if self.dim != d:
            raise ValueError(
                f"dim={dim} but {(self.index_model or self.embed_model).model_name} gives {d}-dimensional embeddings; drop dim or fix it."
            )
        rng = np.random.default_rng(self.config.seed)
        for group in self.groups:
            group.split(self.config.val_fraction, rng)
            if self.config.hard_negatives:  # FinetuneConfig allows them only with in-batch negatives
                group.hard = mine_hard_negatives(group, self.config.hard_negatives)
        if self.index_model is not None:  # fitted on training rows only: the held-out chunks judge the start fairly
            held = {ids[p] for g, (_, ids) in zip(self.groups, self._cross_rows) for p in g.positives[g.val_idx]}
            self.map_texts = [texts[i] for g, (texts, _) in zip(self.groups, self._cross_rows) for i in g.train_idx]
            searched = target if target is not None else dataset.corpus
            adapter_model, self.map_info = fit_start_map(
                self.embed_model,
                self.index_model,
                self.map_texts,
                {d: t for d, t in searched.items() if d not in held},
                self._doc_vectors,
                self.config.map_sample,
                self.config.seed,
                self._cache,
                self._show_progress,
            )
        if target is not None:
            self._add_memories(target, adapter_model if self.index_model is not None else None)

        self.model: BaseAdapter = adapter_model if adapter_model is not None else LinearLayer(self.dim, self.dim, bias=bias)
        check_adapter_dim(self.model, self.groups[0].queries.shape[1], self.dim)
        self._start = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}  # every run starts here

    def _group(self, name: str, queries: Mapping[str, str], corpus: Mapping[str, str], relevant: Mapping[str, List[str]]) -> TrainingGroup:
        qids, doc_ids = list(queries), list(corpus)
        pos = {d: i for i, d in enumerate(doc_ids)}
        what = (
            {"query": "labelled questions", "text": "their chunks"}
            if name == "train"
            else {"query": "pseudo-queries", "text": "searched chunks"}
        )
        embed = lambda model, texts, kind: embed_texts(
            model, texts, kind, cache=self._cache, show_progress=self._show_progress, purpose=what[kind]
        )  # noqa: E731
        docs = embed(self.index_model or self.embed_model, [corpus[d] for d in doc_ids], "text")
        if self.index_model is not None:
            self._doc_vectors.update(zip(doc_ids, docs))
            self._cross_rows.append(([queries[q] for q in qids], doc_ids))
        return TrainingGroup(
            name=name,
            queries=embed(self.embed_model, [queries[q] for q in qids], "query"),
            positives=np.array([pos[relevant[q][0]] for q in qids]),
            docs=docs,
            other_relevant=[[pos[d] for d in relevant[q][1:]] for q in qids],
        )

    def _add_target_corpus(self, corpus: Dict[str, str], llm: Any) -> None:
        """Pseudo-queries of the corpus that will be searched, as a second group."""
        config = self.config
        if llm is None:
            pairs = pseudo_queries(corpus, config.pseudo_queries_per_chunk, words=config.pseudo_query_words, seed=config.seed)
        else:
            pairs = generated_pseudo_queries(
                corpus, llm, config.pseudo_queries_per_chunk, self._model_output_path / "pseudo_queries.json", self._show_progress
            )
        if not pairs:
            need = "a sentence of 6+ words" if config.pseudo_query_words is None else f"{config.pseudo_query_words[0]}+ words"
            raise DatasetError(
                f"unlabeled_corpus gave no pseudo-queries: no chunk has {need}"
                + (" (or the LLM gave no usable question; see pseudo_queries.json.progress.jsonl)." if llm is not None else ".")
            )
        queries = {f"pseudo-{i}": q for i, (q, _) in enumerate(pairs)}
        relevant = {f"pseudo-{i}": [d] for i, (_, d) in enumerate(pairs)}
        self.groups.append(self._group("unlabeled", queries, corpus, relevant))

    def _add_memories(self, corpus: Dict[str, str], start: Optional[BaseAdapter]) -> None:
        """The searched corpus's memories (its sentences; labelled questions about it), added to ``start``'s queries."""
        config = self.config
        if config.corpus_memory:
            memory = CorpusMemory.from_corpus(
                corpus,
                self.embed_model,
                doc_vectors=self.groups[-1].docs,
                cache=self._cache,
                show_progress=self._show_progress,
                index_model=self.index_model,
                weight=config.memory_weight,
                temperature=config.memory_temperature,
                key_dim=self.groups[0].queries.shape[1],
                max_keys=config.memory_keys_per_chunk,
            )
            if len(memory.keys):
                self.memories["sentences"] = memory
        # Labelled questions whose chunks are in this corpus are questions about it: the best evidence there is.
        labelled = [self.dataset] + ([self.target_questions] if self.target_questions is not None else [])
        relevant = [d.relevant_docs[q] for d in labelled for q in d.queries]
        self.labels_on_target = any(d in corpus for docs in relevant for d in docs)
        check_run(config, self._explicit, **self._given, questions_on_target=self.labels_on_target)
        if config.question_memory and self.labels_on_target:  # they become a memory, and decide each memory's pull
            vectors = np.concatenate(
                [self.groups[0].queries]
                + [
                    embed_texts(self.embed_model, list(d.queries.values()), "query", cache=self._cache, show_progress=self._show_progress)
                    for d in labelled[1:]
                ]
            )
            owners = {r: [d for d in docs if d in corpus] for r, docs in enumerate(relevant)}
            self.memories, self.memory_choice = choose_memories(
                vectors, owners, list(corpus), self.groups[-1].docs, self.memories.get("sentences"), config, start
            )

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
        check_run(config, changed, **self._given, memories_chosen=bool(self.memory_choice))
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
        for name, memory in list(self.memories.items()):
            if name == "sentences":  # its pull: chosen on labelled questions of this corpus when there are some, else this run's option
                weight = self.memory_choice["sentence_weight"] if self.memory_choice else self.config.memory_weight
                memory = self.memories[name] = memory.with_pull(weight, self.config.memory_temperature)
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
