"""How far each corpus memory pulls, chosen on held-out labelled questions about the searched corpus.

Labelled questions whose relevant chunks are in the corpus that will be searched are real questions
about it, the best evidence there is. A fifth of them is held out; a question memory built from the
others (each weight and temperature of ``FinetuneConfig``'s grids; weight 0: no such memory) and the
sentence memory (its ``memory_weight``, 0.1, or off) are added to the base query, and each pair is
scored by MRR@10 over the whole corpus. The best pair is kept; ties go to the weaker pulls.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from adapterkit.data.splits import held_out
from adapterkit.memory.corpus_memory import CorpusMemory, apply_memories
from adapterkit.metrics import exact_search, metrics_at_k
from adapterkit.training.config import FinetuneConfig


def mrr10(queries: np.ndarray, docs: np.ndarray, relevant: List[List[int]]) -> float:
    """MRR@10 of ``queries`` over every row of ``docs``."""
    _, _, ranks = exact_search(queries, docs, 1, relevant)
    return float(metrics_at_k(ranks, 10)["mrr"].mean())


def choose_memories(
    question_vectors: np.ndarray,
    owners: Mapping[int, List[str]],
    corpus_ids: Sequence[str],
    doc_vectors: np.ndarray,
    sentences: Optional[CorpusMemory],
    config: FinetuneConfig,
    start: Optional[torch.nn.Module] = None,
) -> Tuple[Dict[str, CorpusMemory], Dict[str, Any]]:
    """The memories to keep and how they were chosen.

    Args:
        question_vectors: base embeddings of the labelled questions (one row per question).
        owners: row -> that question's relevant chunk ids that are in the searched corpus (rows without
            any are left out).
        corpus_ids: the searched corpus's ids, in the order of ``doc_vectors``' rows.
        doc_vectors: the searched corpus's frozen chunk vectors.
        sentences: the corpus's sentence memory, if one was built (left unchanged: the kept one is a copy
            with the chosen pull).
        config: the run's options (grids, ``memory_weight``, ``seed``).
        start: the adapter the memories are added to while choosing (default: none, the base queries);
            a cross-model run's fitted map, without which its queries are not in the documents' space.

    Returns:
        ``({"questions": ..., "sentences": ...}`` with the memories kept, ``choice``), where ``choice``
        holds the chosen weights and every candidate's held-out MRR@10.
    """
    position = {d: i for i, d in enumerate(corpus_ids)}
    rows = sorted(r for r in owners if owners[r])
    if not rows:
        raise ValueError("No labelled question has a relevant chunk in the searched corpus: there is nothing to choose on.")

    def build(chosen: Sequence[int], weight: float, temperature: float) -> CorpusMemory:
        ids = [d for r in chosen for d in owners[r]]
        keys = [r for r in chosen for _ in owners[r]]
        return CorpusMemory.from_pairs(question_vectors[keys], ids, {d: doc_vectors[position[d]] for d in set(ids)},
                                       weight=weight, temperature=temperature)

    kept_at, held_at = held_out(len(rows), 0.2, np.random.default_rng(config.seed))
    held = [rows[i] for i in held_at] if len(rows) > 1 else rows  # one question: all there is to choose on
    fit = sorted(rows[i] for i in kept_at) if len(rows) > 1 else []
    relevant = [[position[d] for d in owners[r]] for r in held]
    base = torch.as_tensor(question_vectors[held])
    with torch.no_grad():
        adapted = start(base).float() if start is not None else base
    sentence_weights = sorted({0.0, 0.1, config.memory_weight}) if sentences is not None else [0.0]
    candidates = [(0.0, 0.0)] + [(w, t) for t in (config.question_memory_temperatures if fit else ())
                                 for w in config.question_memory_weights if w > 0]
    scores = {}
    for temperature in sorted({t for _, t in candidates}):
        questions = build(fit, 1.0, temperature) if temperature else None
        for weight in (w for w, t in candidates if t == temperature):
            for sentence_weight in sentence_weights:
                used = [m.with_pull(w) for m, w in ((questions, weight), (sentences, sentence_weight)) if m is not None and w]
                scores[(weight, temperature, sentence_weight)] = mrr10(apply_memories(adapted, base, used).numpy(), doc_vectors, relevant)
    weight, temperature, sentence_weight = max(scores, key=lambda c: (round(scores[c], 6), -c[0], -c[2]))
    choice = {"question_weight": weight, "question_temperature": temperature, "sentence_weight": sentence_weight,
              "held_out_questions": len(held), "mrr@10": {"/".join(map(str, c)): round(v, 4) for c, v in scores.items()}}
    kept: Dict[str, CorpusMemory] = {}
    if weight > 0:
        kept["questions"] = build(rows, weight, temperature)
    if sentences is not None and sentence_weight:
        kept["sentences"] = sentences.with_pull(sentence_weight)
    return kept, choice
