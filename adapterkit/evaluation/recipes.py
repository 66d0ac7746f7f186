"""Recipes to compare: the engine with given options, and NUDGE-N (which edits document vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset

# A recipe: (training questions, target questions, base model, a work folder) -> (a model to query with,
# document vectors to search instead of the base model's (or None), notes for the table).
Recipe = Callable[[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset, Any, Path], Tuple[Any, Optional[dict], dict]]


def engine_recipe(target_corpus: bool = True, **options: Any) -> Recipe:
    """``EmbeddingAdapterFinetuneEngine`` on the training questions (and, with ``target_corpus``, the
    target's chunks without labels), with ``options``."""

    def run(
        train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path
    ) -> Tuple[Any, Optional[dict], dict]:
        from adapterkit.training.engine import EmbeddingAdapterFinetuneEngine

        engine = EmbeddingAdapterFinetuneEngine(
            train,
            model,
            model_output_path=folder,
            show_progress=False,
            unlabeled_corpus=target.corpus if target_corpus else None,
            **options,
        )
        engine.finetune()
        notes: Dict[str, Any] = {"best_epoch": engine.best_epoch, "memories": "+".join(engine.memories) or "none"}
        if engine.memory_choice:
            notes["memory_choice"] = {k: engine.memory_choice[k] for k in ("question_weight", "question_temperature", "sentence_weight")}
        return engine.get_finetuned_model(), None, notes

    return run


def nudge_recipe(
    train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path
) -> Tuple[Any, Optional[dict], dict]:
    """NUDGE-N: the documents' vectors edited from the training questions (the index changes)."""
    from adapterkit.evaluation.nudge import nudge_documents

    if set(train.corpus) != set(target.corpus):
        raise LookupError("NUDGE edits the documents the training questions answer: the target corpus must be that corpus.")
    result = nudge_documents(train, model)
    return model, result.doc_vectors, {"gamma": result.gamma, "edited": result.edited}
