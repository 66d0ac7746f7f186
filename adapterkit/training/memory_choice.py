"""How far the question memory pulls, chosen on labelled questions about the searched corpus.

Labelled questions add to the label-free signals and never veto them: the sentence memory keeps its
label-free pull (``memory_weight``, set when it was built), and the questions decide only whether a memory of themselves is
added, and how far it pulls, moving away from "no question memory" only on clear evidence:

1. The questions are split into ``MAX_FOLDS`` folds (at most one per question); each fold is held out
   once while a question memory is built from the others, so every question is scored once, unseen.
2. Each candidate (a question memory at each weight and temperature of ``FinetuneConfig``'s grids, or
   none) is added, with the sentence memory, to the query and scored by each question's reciprocal
   rank (MRR@10) over the whole corpus.
3. A candidate replaces "none" only when its per-question gain is larger than one standard error
   (``selection.clearly_better``) and the questions it helps outnumber those it hurts by a sign test
   at the same level (one-sided p <= 0.16: at least 3 questions helped and none hurt, 5 to 1, ...),
   since a standard error of two or three equal gains says nothing. Among those, the best mean wins
   (ties go to the weaker pull). A handful of questions, tied or noisy, changes nothing.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from adapterkit.memory.corpus_memory import CorpusMemory, apply_memories
from adapterkit.metrics import exact_search, reciprocal_rank
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.selection import clearly_better

MAX_FOLDS = 5  # every question is held out once; more folds would only rebuild more memories
SIGN_LEVEL = 0.16  # one-sided sign-test level, that of one standard error of a normal mean


def more_helped_than_hurt(gain: np.ndarray) -> bool:
    """Sign test: the chance of at least this many helped questions among those that moved, were it a coin toss."""
    wins, moved = int((gain > 0).sum()), int((gain != 0).sum())
    return moved > 0 and sum(math.comb(moved, k) for k in range(wins, moved + 1)) / 2**moved <= SIGN_LEVEL


def rr10(queries: np.ndarray, docs: np.ndarray, relevant: List[List[int]]) -> np.ndarray:
    """Reciprocal rank (0 past 10) of each query over every row of ``docs``."""
    _, _, ranks = exact_search(queries, docs, 1, relevant)
    return np.asarray(reciprocal_rank([r.min() for r in ranks], 10))


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
        sentences: the corpus's sentence memory, if one was built, with its pull (kept as it is).
        config: the run's options (the question memory's grids, ``seed``).
        start: the adapter the memories are added to while choosing (default: none, the base queries);
            a cross-model run's fitted map, without which its queries are not in the documents' space.

    Returns:
        ``({"questions": ..., "sentences": ...}`` with the memories kept, ``choice``), where ``choice``
        holds the chosen weights, the default, and every candidate's MRR@10 over the held-out folds.
    """
    position = {d: i for i, d in enumerate(corpus_ids)}
    rows = sorted(r for r in owners if owners[r])
    if not rows:
        raise ValueError("No labelled question has a relevant chunk in the searched corpus: there is nothing to choose on.")

    def build(chosen: Sequence[int], weight: float, temperature: float) -> CorpusMemory:
        ids = [d for r in chosen for d in owners[r]]
        keys = [r for r in chosen for _ in owners[r]]
        return CorpusMemory.from_pairs(
            question_vectors[keys], ids, {d: doc_vectors[position[d]] for d in set(ids)}, weight=weight, temperature=temperature
        )

    order = [rows[i] for i in np.random.default_rng(config.seed).permutation(len(rows))]
    folds = [order[i::MAX_FOLDS] for i in range(min(MAX_FOLDS, len(order)))] if len(order) > 1 else [order]
    sentence_weight = sentences.weight if sentences is not None else 0.0  # the label-free pull: never vetoed
    grid = [(w, t) for t in config.question_memory_temperatures for w in config.question_memory_weights if w > 0]
    default = (0.0, 0.0, sentence_weight)
    candidates = [default] + ([(w, t, sentence_weight) for w, t in grid] if len(order) > 1 else [])
    rr: Dict[tuple, List[np.ndarray]] = {c: [] for c in candidates}
    for fold in folds:  # each question scored once, by memories built without it
        others = [r for r in rows if r not in set(fold)] if len(folds) > 1 else []
        relevant = [[position[d] for d in owners[r]] for r in fold]
        base = torch.as_tensor(question_vectors[fold])
        with torch.no_grad():
            adapted = start(base).float() if start is not None else base
        memories = {t: build(others, 1.0, t) for t in {t for _, t, _ in candidates if t}} if others else {}
        for weight, temperature, pull in candidates:
            used = [m.with_pull(w) for m, w in ((memories.get(temperature), weight), (sentences, pull)) if m is not None and w]
            rr[(weight, temperature, pull)].append(rr10(apply_memories(adapted, base, used).numpy(), doc_vectors, relevant))
    scored = {c: np.concatenate(v) for c, v in rr.items()}
    better = [
        c
        for c in scored
        if c != default and clearly_better(scored[c], scored[default]) and more_helped_than_hurt(scored[c] - scored[default])
    ]
    weight, temperature, _ = max(better, key=lambda c: (round(float(scored[c].mean()), 6), -c[0])) if better else default
    choice = {
        "question_weight": weight,
        "question_temperature": temperature,
        "sentence_weight": sentence_weight,
        "default": "/".join(map(str, default)),
        "held_out_questions": len(order),
        "folds": len(folds),
        "mrr@10": {"/".join(map(str, c)): round(float(v.mean()), 4) for c, v in scored.items()},
    }
    kept: Dict[str, CorpusMemory] = {}
    if weight > 0:
        kept["questions"] = build(rows, weight, temperature)
    if sentences is not None and sentence_weight:
        kept["sentences"] = sentences
    return kept, choice
