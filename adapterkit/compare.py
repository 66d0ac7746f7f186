"""Models side by side on one question set: metrics per model and the change against base, with
paired bootstrap intervals (the same questions resampled for both), so a gain or a loss is only
called one when it is larger than chance.

Example::

    frames = {"base": evaluate(test, base, top_k=10), "adapter": evaluate(test, tuned, top_k=10)}
    comparison_table(frames)
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from adapterkit.datasets import EmbeddingQAFinetuneDataset
from adapterkit.eval_utils import evaluate
from adapterkit.metrics import paired_bootstrap

# A recipe: (training questions, target questions, base model, a work folder) -> (a model to query with,
# document vectors to search instead of the base model's (or None), notes for the table).
Recipe = Callable[[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset, Any, Path], Tuple[Any, Optional[dict], dict]]

METRICS = ("hit@5", "mrr@5", "ndcg@10")


def per_query(frame: pd.DataFrame) -> Dict[str, np.ndarray]:
    """hit@5 and MRR@5 (from the first relevant rank) and nDCG@10 of each query of an ``evaluate(top_k=10)`` frame."""
    rank = frame["rank"].to_numpy()
    return {"hit@5": (rank <= 5).astype(float), "mrr@5": np.where(rank <= 5, 1.0 / rank, 0.0), "ndcg@10": frame["ndcg"].to_numpy(dtype=float)}


def comparison_table(frames: Mapping[str, pd.DataFrame], base: str = "base", deltas: Sequence[str] = ("ndcg@10", "mrr@5"),
                     digits: int = 4, reps: int = 2000) -> pd.DataFrame:
    """One row per model: ``METRICS``, and for ``deltas`` the change against ``base`` with its 95% interval.

    Args:
        frames: ``{name: evaluate(..., top_k=10) DataFrame}`` over the same questions, ``base`` among them.
        deltas: metrics whose change is given as ``Δ<metric>`` and ``Δ<metric> 95%`` (``"[low, high]"``).
    """
    if base not in frames:
        raise ValueError(f"frames has no {base!r} entry to compare against; give the base model's results under that name.")
    reference = per_query(frames[base])
    rows = []
    for name, frame in frames.items():
        scores = per_query(frame)
        if len(scores["hit@5"]) != len(reference["hit@5"]) or list(frame["query_id"]) != list(frames[base]["query_id"]):
            raise ValueError(f"{name!r} was evaluated on other questions than {base!r}; compare results of the same dataset.")
        row = {"model": name, **{m: round(float(scores[m].mean()), digits) for m in METRICS}}
        for m in deltas:
            if name == base:
                row[f"Δ{m}"], row[f"Δ{m} 95%"] = "", ""
                continue
            diff, low, high = paired_bootstrap(reference[m], scores[m], reps=reps)
            row[f"Δ{m}"], row[f"Δ{m} 95%"] = f"{diff:+.{digits}f}", f"[{low:+.{digits}f}, {high:+.{digits}f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def engine_recipe(target_corpus: bool = True, **options: Any) -> Recipe:
    """``EmbeddingAdapterFinetuneEngine`` on the training questions (and, with ``target_corpus``, the
    target's chunks without labels), with ``options``."""
    def run(train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path) -> Tuple[Any, Optional[dict], dict]:
        from adapterkit.trainer import EmbeddingAdapterFinetuneEngine

        engine = EmbeddingAdapterFinetuneEngine(train, model, model_output_path=folder, show_progress=False,
                                                unlabeled_corpus=target.corpus if target_corpus else None, **options)
        engine.finetune()
        notes = {"best_epoch": engine.best_epoch, "memories": "+".join(engine.memories) or "none"}
        if engine.memory_choice:
            notes["memory_choice"] = {k: engine.memory_choice[k] for k in ("question_weight", "question_temperature", "sentence_weight")}
        return engine.get_finetuned_model(), None, notes
    return run


def nudge_recipe(train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, model: Any, folder: Path) -> Tuple[Any, Optional[dict], dict]:
    """NUDGE-N: the documents' vectors edited from the training questions (the index changes)."""
    from adapterkit.nudge import nudge_documents

    if set(train.corpus) != set(target.corpus):
        raise LookupError("NUDGE edits the documents the training questions answer: the target corpus must be that corpus.")
    result = nudge_documents(train, model)
    return model, result.doc_vectors, {"gamma": result.gamma, "edited": result.edited}


def compare_recipes(train: EmbeddingQAFinetuneDataset, target: EmbeddingQAFinetuneDataset, recipes: Mapping[str, Recipe],
                    model: Any, work: Path, log: Callable[[str], None] = print) -> Tuple[Dict[str, pd.DataFrame], Dict[str, dict]]:
    """``{name: evaluate frame}`` (``"base"`` first) and ``{name: notes}`` of every recipe on ``target``.

    A recipe that does not apply to the pair (it raises ``LookupError``) is left out, with a line in the log.
    """
    frames, notes = {"base": evaluate(target, model, top_k=10)}, {}
    for name, recipe in recipes.items():
        start = time.perf_counter()
        try:
            embed_model, doc_vectors, info = recipe(train, target, model, Path(work) / f"recipe-{len(frames)}")
        except LookupError as exc:
            log(f"{name}: skipped ({exc})")
            continue
        frames[name] = evaluate(target, embed_model, top_k=10, doc_vectors=doc_vectors)
        notes[name] = {**info, "seconds": round(time.perf_counter() - start, 1)}
        log(f"{name}: nDCG@10 {frames[name]['ndcg'].mean():.4f} (base {frames['base']['ndcg'].mean():.4f}) {notes[name]}")
    return frames, notes


def section(name: str, table: pd.DataFrame, notes: Mapping[str, dict]) -> str:
    """One task's comparison as markdown: a heading, the table, and each recipe's notes."""
    return f"### {name}\n\n" + table.to_markdown(index=False) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n"


def compare_tasks(tasks: Iterable[Tuple[str, EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset, Mapping[str, Recipe]]], model: Any,
                  render: Callable[[str, pd.DataFrame, Mapping[str, dict]], str] = section) -> Tuple[List[str], Dict[str, dict]]:
    """``compare_recipes`` on each ``(name, train, target, recipes)`` (a generator loads one task at a time).

    Returns the rendered sections and ``{name: {"table": rows, "notes": notes}}``; engines' folders
    live in a temporary folder removed at the end.
    """
    sections, results = [], {}
    with tempfile.TemporaryDirectory(prefix="adapterkit-compare-") as work:
        for name, train, target, recipes in tasks:
            frames, notes = compare_recipes(train, target, recipes, model, Path(work) / name, log=lambda line, n=name: print(f"[{n}] {line}", flush=True))
            table = comparison_table(frames)
            results[name] = {"table": table.to_dict(orient="records"), "notes": notes}
            sections.append(render(name, table, notes))
    return sections, results


def write_report(output: Optional[str], title: str, command: str, sections: Sequence[str], results: Mapping[str, dict]) -> None:
    """Print the sections; with ``output``, write ``<output>.md`` (title, command, sections) and ``<output>.json``."""
    print("\n".join(sections))
    if output:
        Path(output + ".md").write_text(f"# {title}\n\n`{command}`\n\n" + "\n".join(sections))
        Path(output + ".json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def split_queries(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """A random 80/20 split of the questions over the same corpus: (training part, held-out part)."""
    order = [list(dataset.queries)[i] for i in np.random.default_rng(seed).permutation(len(dataset.queries))]
    held = len(order) // 5
    return dataset.with_queries(order[held:]), dataset.with_queries(order[:held])


def split_corpus(dataset: EmbeddingQAFinetuneDataset, seed: int = 0) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """Random halves of the chunks, each with its own questions: (one half, the other)."""
    chunks = list(dataset.corpus)
    order = [chunks[i] for i in np.random.default_rng(seed).permutation(len(chunks))]
    return dataset.restrict(order[: len(order) // 2]), dataset.restrict(order[len(order) // 2 :])
