"""``evaluate_model_folder`` (the ``adapterkit eval`` command): base next to a model folder on a questions file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import pandas as pd

from adapterkit.cache import EmbeddingCache
from adapterkit.cross_model import read_identity
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.data.question_rows import is_dataset_json, read_rows, resolve_rows
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.pipeline.output_folder import MANIFEST, questions_outside, read_manifest
from adapterkit.pipeline.report import write_eval_report
from adapterkit.pipeline.sources import chunks_from_folder

PathLike = Union[str, "os.PathLike[str]"]


BUILT_IN_SPECS = ("default", "minilm")  # the offline models of the package: the only ones eval loads on a folder's word


def base_model_of(folder: Path, embed_model: Any = None) -> Any:
    """The base model a folder was fitted with: ``embed_model`` if given, else the built-in spec ``fit`` recorded.

    A folder's ``fit.json`` is data, not an instruction: a spec it names is loaded only when it is one of
    the package's offline models (``BUILT_IN_SPECS``); any other (a hub id, an API model, a local path)
    must be passed by the user. When ``fit.json`` records the model's identity, the model must match it."""
    manifest = folder / MANIFEST
    record = read_manifest(manifest) or {}
    spec = embed_model if embed_model is not None else record.get("embed_spec")
    if spec is None:
        raise ValueError(
            f"{folder} does not say which base model it was trained over (no embed_spec in {MANIFEST}): "
            "pass it, e.g. --embed-model default."
        )
    if embed_model is None and spec not in BUILT_IN_SPECS:
        raise ValueError(
            f"{manifest} says the folder was fitted over {spec!r}; eval loads only the package's own models "
            f"({', '.join(BUILT_IN_SPECS)}) on a folder's word. If you trust that model, pass it: --embed-model {spec}."
        )
    model = resolve_embed_model(spec)
    recorded = record.get("embed_model")
    if isinstance(recorded, str) and model_identity(model) != recorded:
        raise ValueError(
            f"{folder} was fitted over the base model {recorded}, but {spec!r} is {model_identity(model)}: "
            "evaluate it with the model it was fitted with."
        )
    return model


def questions_to_score(
    folder: Path, questions: Path, docs: Optional[PathLike], chunk_size: Optional[int], chunk_overlap: Optional[int], follow_symlinks: bool
) -> EmbeddingQAFinetuneDataset:
    """The questions file as a dataset: LlamaIndex's JSON as it is, question rows placed on ``docs``' chunks."""
    if is_dataset_json(questions):
        if docs is not None or chunk_size is not None or chunk_overlap is not None or follow_symlinks:
            raise ValueError(f"{questions} is LlamaIndex's dataset JSON, which holds its own corpus: leave --docs and the chunk flags out.")
        return EmbeddingQAFinetuneDataset.from_json(questions)
    if docs is None:
        raise ValueError(f"{questions} names files of a documents folder: give that folder too (--docs DOCS_DIR).")
    questions_outside(questions, docs)
    record = read_manifest(folder / MANIFEST) or {}
    size = chunk_size if chunk_size is not None else record.get("chunk_size") or 1024
    overlap = chunk_overlap if chunk_overlap is not None else record.get("chunk_overlap")
    links = follow_symlinks or bool(record.get("follow_symlinks"))  # read the folder as the fit did
    source = chunks_from_folder(docs, size, overlap if overlap is not None else 200, show_progress=False, follow_symlinks=links)
    dataset, missing = resolve_rows(read_rows(questions), source.corpus, source.chunks_of, source.skipped)
    if missing:
        print(
            f"{len(missing)} question(s) left out: " + "; ".join(f"{q!r} ({why})" for q, why in list(missing.items())[:5]), file=sys.stderr
        )
    return dataset.validate(str(questions))


def evaluate_model_folder(
    model_dir: PathLike,
    questions: PathLike,
    out: Optional[PathLike] = None,
    embed_model: Any = None,
    cache: Union[EmbeddingCache, PathLike, None] = None,
    show_progress: bool = True,
    index_model: Any = None,
    docs: Optional[PathLike] = None,
    chunk_size: Optional[int] = None,
    chunk_overlap: Optional[int] = None,
    follow_symlinks: bool = False,
) -> Tuple[pd.DataFrame, Path]:
    """Score the base model and the model folder on a questions file.

    Args:
        model_dir: a folder written by ``fit_documents`` or the engine.
        questions: rows of question, file and quote over ``docs`` (``question_rows``), or LlamaIndex's
            dataset JSON with its own corpus.
        docs: the documents folder that question rows name files of; read with the chunk settings the
            fit recorded (``chunk_size`` / ``chunk_overlap`` override them).
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
    dataset = questions_to_score(folder, questions, docs, chunk_size, chunk_overlap, follow_symlinks)
    base = base_model_of(folder, embed_model)
    record = read_identity(folder)
    if record is not None and index_model is None:
        raise ValueError(
            f"{folder} maps {record['query_model_name']} queries into an index of {record['index_model_name']}: "
            "give that model too (--index-model SPEC); it is also the base the adapter is scored against."
        )
    index = resolve_embed_model(index_model) if index_model is not None else None
    served = AdapterEmbeddingModel(base, folder, cache=cache, index_model=index)
    frames = {
        "base": evaluate(dataset, index or base, top_k=10, cache=cache, verbose=show_progress),
        "adapter": evaluate(dataset, served, top_k=10, cache=cache, verbose=show_progress),
    }
    table = comparison_table(frames)
    report = write_eval_report(Path(out) if out else folder / "eval", folder, questions, table, frames)
    return table, report
