"""What the engine trains on: labelled pairs and the searched corpus's pseudo-queries, each embedded once.

Every text goes through the embedding cache, so a second run (or a second engine) embeds nothing again.
Labelled pairs form the group ``"train"``; the pseudo-queries of an unlabeled corpus the group
``"unlabeled"``. Each group is then split into training and held-out chunks (``TrainingGroup.split``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.cache import embed_texts
from adapterkit.data.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.pseudo_queries import generated_pseudo_queries, pseudo_queries
from adapterkit.training.sampling import TrainingGroup, mine_hard_negatives

PURPOSE = {  # what the progress bars say is being embedded
    "train": {"query": "labelled questions", "text": "their chunks"},
    "unlabeled": {"query": "pseudo-queries", "text": "searched chunks"},
}


@dataclass
class TrainingData:
    """The groups a run trains on, and the texts behind their rows (a cross-model run fits its start map on them).

    Attributes:
        groups: ``"train"`` (labelled pairs) and, with an unlabeled corpus, ``"unlabeled"`` (its pseudo-queries).
        query_texts: each group's query texts, in row order.
        doc_ids: each group's chunk ids, in the order of its ``docs`` rows.
        doc_vectors: chunk id -> the document vector its group holds.
    """

    groups: List[TrainingGroup] = field(default_factory=list)
    query_texts: List[List[str]] = field(default_factory=list)
    doc_ids: List[List[str]] = field(default_factory=list)
    doc_vectors: Dict[str, np.ndarray] = field(default_factory=dict)

    def add(
        self,
        name: str,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        relevant: Mapping[str, List[str]],
        embed_model: BaseEmbedding,
        index_model: Optional[BaseEmbedding] = None,
        cache: Any = None,
        show_progress: bool = False,
    ) -> TrainingGroup:
        """Embed a group: queries by ``embed_model``, chunks by ``index_model`` (default ``embed_model``)."""
        qids, doc_ids = list(queries), list(corpus)
        position = {d: i for i, d in enumerate(doc_ids)}
        what = PURPOSE[name]
        texts = [queries[q] for q in qids]
        docs = embed_texts(
            index_model or embed_model, [corpus[d] for d in doc_ids], "text", cache=cache, show_progress=show_progress, purpose=what["text"]
        )
        group = TrainingGroup(
            name=name,
            queries=embed_texts(embed_model, texts, "query", cache=cache, show_progress=show_progress, purpose=what["query"]),
            positives=np.array([position[relevant[q][0]] for q in qids]),
            docs=docs,
            other_relevant=[[position[d] for d in relevant[q][1:]] for q in qids],
        )
        self.groups.append(group)
        self.query_texts.append(texts)
        self.doc_ids.append(doc_ids)
        self.doc_vectors.update(zip(doc_ids, docs))
        return group

    def split(self, config: FinetuneConfig) -> None:
        """Hold out ``val_fraction`` of each group's chunks (seeded) and mine hard negatives where asked."""
        rng = np.random.default_rng(config.seed)
        for group in self.groups:
            group.split(config.val_fraction, rng)
            if config.hard_negatives:  # FinetuneConfig allows them only with in-batch negatives
                group.hard = mine_hard_negatives(group, config.hard_negatives)

    def training_queries(self) -> List[str]:
        """The query texts of the training rows (not held out), every group."""
        return [texts[i] for g, texts in zip(self.groups, self.query_texts) for i in g.train_idx]

    def held_out_chunks(self) -> set:
        """The ids of the chunks held out of training, every group."""
        return {ids[p] for g, ids in zip(self.groups, self.doc_ids) for p in g.positives[g.val_idx]}


def pseudo_query_pairs(corpus: Dict[str, str], llm: Any, config: FinetuneConfig, output_path: Path, show_progress: bool) -> tuple:
    """``(queries, relevant)`` of the searched corpus: its sentences, or an LLM's questions (resumed from ``output_path``)."""
    if llm is None:
        pairs = pseudo_queries(corpus, config.pseudo_queries_per_chunk, words=config.pseudo_query_words, seed=config.seed)
    else:
        pairs = generated_pseudo_queries(corpus, llm, config.pseudo_queries_per_chunk, output_path / "pseudo_queries.json", show_progress)
    if not pairs:
        need = "a sentence of 6+ words" if config.pseudo_query_words is None else f"{config.pseudo_query_words[0]}+ words"
        raise DatasetError(
            f"unlabeled_corpus gave no pseudo-queries: no chunk has {need}"
            + (" (or the LLM gave no usable question; see pseudo_queries.json.progress.jsonl)." if llm is not None else ".")
        )
    queries = {f"pseudo-{i}": q for i, (q, _) in enumerate(pairs)}
    relevant = {f"pseudo-{i}": [d] for i, (_, d) in enumerate(pairs)}
    return queries, relevant


def build_training_data(
    dataset: EmbeddingQAFinetuneDataset,
    embed_model: BaseEmbedding,
    config: FinetuneConfig,
    *,
    target: Optional[Dict[str, str]] = None,
    pseudo_query_llm: Any = None,
    index_model: Optional[BaseEmbedding] = None,
    output_path: Path = Path("."),
    cache: Any = None,
    show_progress: bool = False,
) -> TrainingData:
    """The labelled pairs, and the pseudo-queries of ``target`` (the searched corpus) when given, embedded and split.

    Args:
        dataset: labelled pairs (the first relevant chunk of each query is its positive).
        embed_model: embeds the queries.
        config: the run's options (pseudo-queries, held-out share, seed, hard negatives).
        target: ``{chunk id: text}`` of the corpus that will be searched.
        pseudo_query_llm: None: its pseudo-queries are its sentences; an LLM: questions it writes.
        index_model: embeds the chunks when it is not ``embed_model`` (a cross-model run).
        output_path: where an LLM's pseudo-queries are kept (``pseudo_queries.json``).
    """
    data = TrainingData()
    where = dict(index_model=index_model, cache=cache, show_progress=show_progress)
    data.add("train", dataset.queries, dataset.corpus, dataset.relevant_docs, embed_model, **where)
    if target is not None:
        queries, relevant = pseudo_query_pairs(target, pseudo_query_llm, config, output_path, show_progress)
        data.add("unlabeled", queries, target, relevant, embed_model, **where)
    data.split(config)
    return data
