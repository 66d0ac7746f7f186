"""``evaluate_model_folder`` (the ``adapterkit eval`` command): base next to a model folder on a questions file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import pandas as pd

from adapterkit.cache import EmbeddingCache
from adapterkit.cross_model import read_identity
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.pipeline.fit import MANIFEST
from adapterkit.pipeline.report import write_eval_report

PathLike = Union[str, "os.PathLike[str]"]


def base_model_of(folder: Path, embed_model: Any = None) -> Any:
    """The base model a folder was fitted with: ``embed_model`` if given, else the spec ``fit`` recorded.

    When ``fit.json`` records the model's identity, ``embed_model`` must match it; a folder without a
    record needs ``embed_model`` (an adapter over another model's vectors would score nonsense)."""
    record: Dict[str, Any] = {}
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            loaded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{manifest} is not readable JSON ({exc}); pass --embed-model SPEC, or fit the folder again.") from exc
        record = loaded if isinstance(loaded, dict) else {}
    spec = embed_model if embed_model is not None else record.get("embed_spec")
    if spec is None:
        raise ValueError(f"{folder} does not say which base model it was trained over (no embed_spec in {MANIFEST}): "
                         "pass it, e.g. --embed-model default.")
    model = resolve_embed_model(spec)
    recorded = record.get("embed_model")
    if isinstance(recorded, str) and model_identity(model) != recorded:
        raise ValueError(f"{folder} was fitted over the base model {recorded}, but {spec!r} is {model_identity(model)}: "
                         "evaluate it with the model it was fitted with.")
    return model


def evaluate_model_folder(model_dir: PathLike, questions: PathLike, out: Optional[PathLike] = None, embed_model: Any = None,
                          cache: Union[EmbeddingCache, PathLike, None] = None, show_progress: bool = True,
                          index_model: Any = None) -> Tuple[pd.DataFrame, Path]:
    """Score the base model and the model folder on a questions file (LlamaIndex's dataset JSON, with its corpus).

    Args:
        model_dir: a folder written by ``fit_documents`` or the engine.
        questions: the questions to score, over the corpus the file holds.
        out: where ``eval.md`` / ``eval.json`` / plots go (default ``<model_dir>/eval``).
        embed_model: the base model (default: the one ``fit`` recorded in the folder).
        index_model: for a cross-model folder, the model that built the index (scored as the base).

    Returns:
        ``(comparison table, path of eval.md)``.
    """
    from adapterkit.adapter_embedding import AdapterEmbeddingModel

    folder, questions = Path(model_dir), Path(questions)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json): pass the --out folder of `adapterkit fit`.")
    dataset = EmbeddingQAFinetuneDataset.from_json(questions)
    base = base_model_of(folder, embed_model)
    record = read_identity(folder)
    if record is not None and index_model is None:
        raise ValueError(f"{folder} maps {record['query_model_name']} queries into an index of {record['index_model_name']}: "
                         "give that model too (--index-model SPEC); it is also the base the adapter is scored against.")
    index = resolve_embed_model(index_model) if index_model is not None else None
    served = AdapterEmbeddingModel(base, folder, cache=cache, index_model=index)
    frames = {"base": evaluate(dataset, index or base, top_k=10, cache=cache, verbose=show_progress),
              "adapter": evaluate(dataset, served, top_k=10, cache=cache, verbose=show_progress)}
    table = comparison_table(frames)
    report = write_eval_report(Path(out) if out else folder / "eval", folder, questions, table, frames)
    return table, report
