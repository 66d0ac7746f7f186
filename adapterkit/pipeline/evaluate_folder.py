"""``evaluate_model_folder`` (the ``adapterkit eval`` command): base next to a model folder on a questions file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import pandas as pd

from adapterkit.cache import EmbeddingCache
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import resolve_embed_model
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.pipeline.fit import MANIFEST
from adapterkit.pipeline.report import write_eval_report

PathLike = Union[str, "os.PathLike[str]"]


def base_model_of(folder: Path, embed_model: Any = None) -> Any:
    """The base model a folder was fitted with: ``embed_model`` if given, else the spec ``fit`` recorded, else ``"default"``."""
    if embed_model is not None:
        return resolve_embed_model(embed_model)
    manifest = folder / MANIFEST
    spec = None
    if manifest.is_file():
        try:
            spec = json.loads(manifest.read_text()).get("embed_spec")
        except (OSError, ValueError, AttributeError):
            spec = None
    return resolve_embed_model(spec if isinstance(spec, str) else "default")


def evaluate_model_folder(model_dir: PathLike, questions: PathLike, out: Optional[PathLike] = None, embed_model: Any = None,
                          cache: Union[EmbeddingCache, PathLike, None] = None, show_progress: bool = True) -> Tuple[pd.DataFrame, Path]:
    """Score the base model and the model folder on a questions file (LlamaIndex's dataset JSON, with its corpus).

    Args:
        model_dir: a folder written by ``fit_documents`` or the engine.
        questions: the questions to score, over the corpus the file holds.
        out: where ``eval.md`` / ``eval.json`` / plots go (default ``<model_dir>/eval``).
        embed_model: the base model (default: the one ``fit`` recorded in the folder, else ``"default"``).

    Returns:
        ``(comparison table, path of eval.md)``.
    """
    from adapterkit.adapter_embedding import AdapterEmbeddingModel

    folder, questions = Path(model_dir), Path(questions)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json): pass the --out folder of `adapterkit fit`.")
    dataset = EmbeddingQAFinetuneDataset.from_json(questions)
    base = base_model_of(folder, embed_model)
    served = AdapterEmbeddingModel(base, folder, cache=cache)
    frames = {"base": evaluate(dataset, base, top_k=10, cache=cache, verbose=show_progress),
              "adapter": evaluate(dataset, served, top_k=10, cache=cache, verbose=show_progress)}
    table = comparison_table(frames)
    report = write_eval_report(Path(out) if out else folder / "eval", folder, questions, table, frames)
    return table, report
