"""What a fit will do, checked before any work: ``plan_fit`` turns ``fit_documents``' arguments into a ``FitPlan``.

Every argument is checked here, against the others and against the options (``training.config``), so a
mistake costs nothing: no folder is locked, no chunk is read and no text is embedded before the plan
stands. ``fit.py`` then runs the plan's steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Mapping, Optional, Union

from adapterkit.pipeline.output_folder import check_inputs_apart, input_paths, questions_outside
from adapterkit.pipeline.sources import check_chunking
from adapterkit.training.config import FinetuneConfig, check_run

PathLike = Union[str, "os.PathLike[str]"]
DATABASE_STORES = ("postgresql", "postgres", "qdrant", "qdrant+http", "qdrant+https", "PGVectorStore", "QdrantVectorStore")
SENTENCE_MEMORY_OPTIONS = ("memory_keys_per_chunk", "memory_weight", "memory_temperature")  # the memory in the database takes these


@dataclass
class FitPlan:
    """A checked fit: where the chunks come from, how it is evaluated, and what trains.

    Attributes:
        out: the model folder.
        docs / store: where the chunks come from (one of the two).
        sample_chunks / memory_table: a store read in part; a sentence memory built in its database.
        embed_model: the base model's spec or object.
        questions / llm / eval_chunks: what evaluates the fit (your questions, or an LLM's about sampled chunks).
        config: the run's options, checked.
        engine_options: the options the engine is given (the sentence memory's go to ``memory_table``).
        memory_options: with ``memory_table``: the sentence memory's options, for the database.
    """

    out: Path
    docs: Optional[PathLike]
    store: Any
    sample_chunks: Optional[int]
    memory_table: Optional[str]
    embed_model: Any
    questions: Optional[PathLike]
    llm: Any
    eval_chunks: int
    overwrite: bool
    confirm: Optional[Callable[[str], bool]]
    chunk_size: int
    chunk_overlap: int
    cache: Any
    seed: int
    show_progress: bool
    follow_symlinks: bool
    config: FinetuneConfig
    engine_options: Dict[str, Any]
    memory_options: Dict[str, Any]


def check_store_options(store: Any, sample_chunks: Optional[int], memory_table: Optional[str], questions: Any) -> None:
    """``sample_chunks`` and ``memory_table`` need a store (of a kind with a database, for the latter)."""
    from adapterkit.memory.pg_memory import check_name

    if (sample_chunks is not None or memory_table is not None) and store is None:
        raise ValueError("sample_chunks and memory_table are for a vector store: give store (--store) too, or leave them out.")
    if sample_chunks is not None and (isinstance(sample_chunks, bool) or not isinstance(sample_chunks, int) or sample_chunks < 0):
        raise ValueError(f"sample_chunks is a count of chunks (int >= 0), got {sample_chunks!r}.")
    if sample_chunks == 0 and questions is None:
        raise ValueError("sample_chunks=0 reads only the chunks your questions name, and no questions were given: sample some chunks.")
    if memory_table is not None:
        check_name(memory_table)
        kind = store.split(":", 1)[0] if isinstance(store, str) else type(store).__name__
        if kind not in DATABASE_STORES:
            raise ValueError(
                f"memory_table builds the memory in the store's own database (PostgreSQL or Qdrant), and this store is "
                f"{kind}: leave memory_table out (the memory is then kept as files in the model folder)."
            )


def plan_fit(arguments: Mapping[str, Any], options: Mapping[str, Any]) -> FitPlan:
    """The plan of ``fit_documents`` called with these ``arguments`` (its parameters, documented there) and
    ``options`` (``FinetuneConfig`` fields), or the error that names what to fix."""
    a = SimpleNamespace(**arguments)
    if a.questions is not None and a.llm is not None:
        raise ValueError(
            "Give questions or llm for the evaluation, not both: your questions are the better evidence, "
            "and the LLM would write questions nobody scores."
        )
    if a.eval_chunks is not None and a.llm is None:
        raise ValueError("eval_chunks sets how many chunks the LLM is asked about: give llm too, or leave eval_chunks out.")
    if a.eval_chunks is not None and a.eval_chunks < 1:
        raise ValueError(f"eval_chunks must be at least 1, got {a.eval_chunks}.")
    config = FinetuneConfig().updated(**options, seed=a.seed)  # an unknown or out-of-range option fails here
    store_memory = "table" if a.memory_table is not None else "sampled" if a.sample_chunks is not None else ""
    check_run(config, set(options), unlabeled_corpus=True, store_memory=store_memory)  # the folder's or store's chunks are searched
    check_store_options(a.store, a.sample_chunks, a.memory_table, a.questions)
    engine_options, memory_options = dict(options), {}
    if store_memory:  # the engine builds no sentence memory: it would cover what training read, not the whole store
        engine_options = {**{k: v for k, v in options.items() if k not in SENTENCE_MEMORY_OPTIONS}, "corpus_memory": False}
        if a.memory_table is not None:
            memory_options = dict(max_keys=config.memory_keys_per_chunk, weight=config.memory_weight, temperature=config.memory_temperature)
    if a.sample_chunks is not None and a.docs is not None:
        raise ValueError("Give either a documents folder or a store URI (--store), not both and not neither.")
    check_chunking(a.chunk_size, a.chunk_overlap)
    if a.store is not None and ((a.chunk_size, a.chunk_overlap) != (1024, 200) or a.follow_symlinks):
        raise ValueError(
            "chunk_size, chunk_overlap and follow_symlinks read a documents folder; a store's chunks are already split: leave them out."
        )
    out = Path(a.out)
    check_inputs_apart(out, input_paths(a.docs, a.questions, a.store, a.cache))  # before anything is written or removed
    questions_outside(a.questions, a.docs)
    return FitPlan(
        **{**arguments, "out": out, "eval_chunks": a.eval_chunks or 40},
        config=config,
        engine_options=engine_options,
        memory_options=memory_options,
    )
