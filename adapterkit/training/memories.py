"""The searched corpus's memories, saved beside the adapter: its sentences, and labelled questions about it.

The sentence memory is label-free: every sentence of a chunk is a key pointing at that chunk, pulling
with ``memory_weight`` / ``memory_temperature``. Labelled questions whose relevant chunks are in the
corpus are the best evidence there is: ``memory_choice`` decides on them whether a memory of those
questions is added, and how far it pulls. Both are built once, at construction, with their final pulls.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.cache import embed_texts
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.memory.corpus_memory import CorpusMemory
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.memory_choice import choose_memories


def questions_on_target(labelled: Sequence[EmbeddingQAFinetuneDataset], corpus: Dict[str, str]) -> bool:
    """Whether some labelled question has a relevant chunk in the searched corpus."""
    return any(d in corpus for data in labelled for q in data.queries for d in data.relevant_docs[q])


def build_memories(
    corpus: Dict[str, str],
    doc_vectors: np.ndarray,
    labelled: Sequence[EmbeddingQAFinetuneDataset],
    first_vectors: np.ndarray,
    embed_model: BaseEmbedding,
    config: FinetuneConfig,
    *,
    index_model: Optional[BaseEmbedding] = None,
    start: Optional[torch.nn.Module] = None,
    cache: Any = None,
    show_progress: bool = False,
) -> Tuple[Dict[str, CorpusMemory], Optional[Dict[str, Any]]]:
    """``(memories, choice)``: ``{"sentences": ..., "questions": ...}`` as kept, and how the question memory was chosen.

    Args:
        corpus: ``{chunk id: text}`` of the searched corpus.
        doc_vectors: its frozen chunk vectors, in ``corpus``'s order.
        labelled: datasets of labelled questions; those with a relevant chunk in ``corpus`` become evidence.
        first_vectors: base embeddings of ``labelled[0]``'s queries (already computed for training).
        embed_model: embeds sentences and the other datasets' questions as queries.
        config: ``corpus_memory``, ``memory_weight``, ``memory_temperature``, ``memory_keys_per_chunk``, the
            question memory's switch and grids, ``seed``.
        index_model: the model of ``doc_vectors`` when it is not ``embed_model`` (a cross-model run).
        start: the adapter the memories are added to while choosing (a cross-model run's fitted map).

    ``choice`` is None when no question memory was considered (``question_memory=False``, or no labelled
    question about this corpus).
    """
    memories: Dict[str, CorpusMemory] = {}
    if config.corpus_memory:
        sentences = CorpusMemory.from_corpus(
            corpus,
            embed_model,
            doc_vectors=doc_vectors,
            cache=cache,
            show_progress=show_progress,
            index_model=index_model,
            weight=config.memory_weight,
            temperature=config.memory_temperature,
            key_dim=first_vectors.shape[1],
            max_keys=config.memory_keys_per_chunk,
        )
        if len(sentences.keys):
            memories["sentences"] = sentences
    if not (config.question_memory and questions_on_target(labelled, corpus)):
        return memories, None
    vectors = np.concatenate(
        [first_vectors]
        + [embed_texts(embed_model, list(d.queries.values()), "query", cache=cache, show_progress=show_progress) for d in labelled[1:]]
    )
    relevant = [d.relevant_docs[q] for d in labelled for q in d.queries]
    owners = {row: [d for d in docs if d in corpus] for row, docs in enumerate(relevant)}
    return choose_memories(vectors, owners, list(corpus), doc_vectors, memories.get("sentences"), config, start)
