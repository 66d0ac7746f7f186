"""Your documents to a better retriever in one call: ``fit_documents`` (the ``adapterkit fit`` command).

It is a plan and its steps: ``plan_fit`` (``fit_plan``) checks every argument before any work, and
``run_plan`` runs the steps below, writing aside and swapping the folder in at the end.

1. The chunks to search come from a folder or a vector store (``sources``); their base vectors are
   computed once (or read from the store) and cached.
2. The adapter trains on the offline defaults with those chunks as the unlabelled target corpus and the
   walkthrough's published Lyft questions as the labelled side (the setting the public benchmark suite
   measures across domains; their vectors for the default model ship with the package). Your own
   questions (``questions``: rows of question, file and quote) add to that and never switch it off:
   they become a question memory where they show clearly that it helps (``training/memory_choice.py``).
3. The evaluation is as honest as the inputs allow (``Evaluation``): a fifth of your questions, or
   questions an LLM writes about a random sample of chunks, kept out of training and scored base next to
   adapter; with neither, the report says there is no independent evaluation.
4. The model folder gets ``report.md`` / ``report.json`` / plots and ``fit.json``, which a re-run
   compares to say which files and chunks changed (only those are embedded: the cache holds the rest).

A store too large to hold is read for what training needs (``sample_chunks``: the chunks your questions
name and a fixed sample of the rest), its held-out questions are ranked among every stored chunk
(streamed), and its sentence memory is built in the store's own database (``memory_table``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union, cast

import numpy as np
import pandas as pd

from adapterkit.atomic import write_text
from adapterkit.cache import EmbeddingCache, embed_texts, get_cache
from adapterkit.data.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.data.llms import ask_before_paid_calls, resolve_llm
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.question_rows import is_dataset_json, read_rows, resolve_rows
from adapterkit.data.questions import generate_qa_embedding_pairs
from adapterkit.data.splits import held_out, split_queries
from adapterkit.embeddings import model_identity, resolve_embed_model
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.memory.corpus_memory import MEMORY_DIR, load_memories, memory_folders
from adapterkit.metrics import unit_rows
from adapterkit.pipeline.fit_plan import FitPlan, plan_fit
from adapterkit.pipeline.output_folder import MANIFEST, FolderLock, OutputFolderError, StagedFolder, read_manifest
from adapterkit.pipeline.published_vectors import seed_cache
from adapterkit.pipeline.sources import ChunkSource, close_store, sample_from_store, source_of
from adapterkit.stores.counting import CountingEmbedding
from adapterkit.stores.retrieval import compare_on_store
from adapterkit.training.engine import EmbeddingAdapterFinetuneEngine

PathLike = Union[str, "os.PathLike[str]"]
EVAL_QUESTIONS = "eval_questions.json"  # LLM-written evaluation questions (resumable)


@dataclass
class Evaluation:
    """How a fitted model was scored, and on what.

    Attributes:
        kind: ``"questions"`` (a held-out fifth of your labelled questions), ``"llm"`` (questions an
            LLM wrote about sampled chunks) or ``"none"``.
        source: where the scored questions came from, in words.
        dataset: the scored questions over the whole corpus (None for ``"none"``).
        details: counts to report (questions, chunks asked, answers that failed to parse).
    """

    kind: str
    source: str
    dataset: Optional[EmbeddingQAFinetuneDataset] = None
    details: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What ``fit_documents`` made: the model folder, its report and the numbers in it."""

    folder: Path
    report: Path
    evaluation: Evaluation
    table: Optional[pd.DataFrame]
    changes: Dict[str, Any]
    embedded: Dict[str, int]
    seconds: float
    summary: Dict[str, Any]
    database_memory: Optional[Dict[str, Any]] = None  # with memory_table: its name, class, server (no password) and key count
    trained_on: List[str] = field(default_factory=list)  # every data source that trained the model, in words


def check_output_folder(out: Path, origin: str, model_id: str, overwrite: bool) -> Optional[Dict[str, Any]]:
    """The previous run's manifest when ``out`` holds a fit of the same source and model, else None.

    A folder holding anything else is refused unless ``overwrite``; even then only a folder a fit wrote
    (it has ``fit.json``) is replaced, never an arbitrary folder of files. Nothing is removed here: the
    new folder is swapped in when the run ends (``StagedFolder``).
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise OutputFolderError(f"{out} is a file: pass a folder for the model.")
    if not (out / MANIFEST).is_file():
        raise OutputFolderError(
            f"{out} holds files that are not a model folder written by `adapterkit fit` (no {MANIFEST}); "
            "--overwrite replaces only such a folder. Choose an empty or new folder."
        )
    try:
        previous = read_manifest(out / MANIFEST)
    except OutputFolderError:
        if overwrite:
            return None
        raise
    assert previous is not None
    same = previous.get("origin") == origin and previous.get("embed_model") == model_id
    if same and not overwrite:
        return previous if previous.get("complete", True) else None  # an interrupted first fit starts again
    if not overwrite:
        raise OutputFolderError(
            f"{out} already holds a model fitted on {previous['origin']} with {previous['embed_model']}. "
            "Pass --overwrite (overwrite=True) to replace it, or choose another --out."
        )
    return None


def what_changed(previous: Optional[Dict[str, Any]], source: ChunkSource) -> Dict[str, Any]:
    """Files and chunks added, changed, removed since the previous fit of the same source."""
    old_files = previous.get("files", {}) if previous else {}
    old_chunks = set(previous.get("chunks", [])) if previous else set()
    new_chunks = set(source.corpus)
    return {
        "first_run": previous is None,
        "files_added": sorted(f for f in source.files if f not in old_files),
        "files_changed": sorted(f for f in source.files if f in old_files and old_files[f] != source.files[f]),
        "files_removed": sorted(f for f in old_files if f not in source.files),
        "chunks_added": len(new_chunks - old_chunks),
        "chunks_removed": len(old_chunks - new_chunks),
        "chunks_unchanged": len(new_chunks & old_chunks),
    }


def labelled_questions(path: PathLike, source: ChunkSource) -> tuple:
    """``(dataset, left out)``: your questions over the corpus being fitted, and ``{question: why}`` for those left out.

    A file of question rows (``question_rows``: question, file, optional quote) is placed on the
    folder's chunks. LlamaIndex's dataset JSON names chunk ids (``adapterkit chunks`` lists them):
    questions whose chunks are no longer in the documents (a file edited or removed since) are left
    out; when none is left, the ids do not belong to these documents at all, which is an error.
    """
    corpus = source.corpus
    if not is_dataset_json(path):
        if not source.chunks_of or source.store is not None:
            raise DatasetError(
                f"{path} names files of a documents folder, and a store's chunks have no files: give the questions "
                "as LlamaIndex's dataset JSON with the store's chunk ids."
            )
        dataset, missing = resolve_rows(read_rows(path), corpus, source.chunks_of, source.skipped)
        return dataset.validate(str(path)), missing
    given = EmbeddingQAFinetuneDataset.from_json(path)
    kept = {q: docs for q, docs in given.relevant_docs.items() if all(d in corpus for d in docs)}
    if not kept:
        unknown = sorted({d for docs in given.relevant_docs.values() for d in docs if d not in corpus})
        raise DatasetError(
            f"The chunk ids in {path}'s relevant_docs are not chunks of these documents (e.g. {unknown[:3]}). "
            "Ids must be the ones adapterkit gives these chunks (`adapterkit chunks DOCS` lists them), or write the questions "
            "as rows of question, file and quote (see `adapterkit fit --help`)."
        )
    dataset = EmbeddingQAFinetuneDataset(queries={q: given.queries[q] for q in kept}, corpus=dict(corpus), relevant_docs=kept)
    missing = {given.queries[q]: "its chunks are no longer in the documents" for q in given.queries if q not in kept}
    return dataset.validate(str(path)), missing


def llm_evaluation(
    corpus: Dict[str, str], llm: Any, out: Path, eval_chunks: int, seed: int, confirm: Optional[Callable[[str], bool]], show_progress: bool
) -> Evaluation:
    """Questions an LLM writes about a random fifth of the chunks, to be scored and never trained on.

    A fifth of the chunks (at most ``eval_chunks``) is drawn with the package's held-out rule; the
    questions about them are scored and never trained on. The chunks stay searchable, and their
    sentences stay in the memory: at serving time every chunk has its memory keys too.
    """
    ids = list(corpus)
    _, held = held_out(len(ids), 0.2, np.random.default_rng(seed))
    asked = sorted(ids[i] for i in held[:eval_chunks])
    if not asked:
        raise DatasetError("An LLM evaluation needs at least 2 chunks (one held out, one to train on); add documents.")
    llm = resolve_llm(llm)
    generated = generate_qa_embedding_pairs(
        {c: corpus[c] for c in asked},
        llm=llm,
        output_path=out / EVAL_QUESTIONS,
        verbose=show_progress,
        confirm=ask_before_paid_calls(confirm),
    )
    stats = generated.stats
    details = {
        "chunks_asked": len(asked),
        "questions": len(generated.queries),
        "chunks_failed": stats.failed,
        "chunks_too_short": stats.skipped_short,
        "unparsed_lines_dropped": stats.dropped_lines,
    }
    name = getattr(getattr(llm, "metadata", None), "model_name", type(llm).__name__)
    source = f"{len(generated.queries)} questions written by {name} about {len(asked)} sampled chunks (the questions were not trained on)"
    dataset = EmbeddingQAFinetuneDataset(queries=dict(generated.queries), corpus=dict(corpus), relevant_docs=dict(generated.relevant_docs))
    return Evaluation("llm", source, dataset if dataset.queries else None, details)


def query_movement(model: Any, corpus: Dict[str, str], cache: Any = None, sample: int = 200, seed: int = 0) -> Dict[str, Any]:
    """How far the served model moves queries, on sentences of the chunks: a change, never a score.

    Cosine between each sentence's base and served query vector, and the share of sentences whose
    nearest chunk changes. Nothing here says whether a move is right (that needs questions).
    """
    from adapterkit.data.documents import chunk_sentences

    sentences = [s for text in corpus.values() for s in chunk_sentences(text)]
    if not sentences:
        return {}
    texts = [sentences[i] for i in np.random.default_rng(seed).permutation(len(sentences))[:sample]]
    base = model.base_embed_model
    a = unit_rows(embed_texts(base, texts, "query", cache=cache))
    b = model.embed(texts, "query")
    docs = unit_rows(embed_texts(base, list(corpus.values()), "text", cache=cache))
    cos = (a * unit_rows(b)).sum(1)
    moved = float(np.mean((a @ docs.T).argmax(1) != (b @ docs.T).argmax(1)))
    return {
        "sentences": len(texts),
        "median_cosine_base_vs_served": round(float(np.median(cos)), 4),
        "min_cosine_base_vs_served": round(float(cos.min()), 4),
        "share_whose_nearest_chunk_changes": round(moved, 4),
    }


def question_chunks(path: PathLike) -> Set[str]:
    """Every chunk id a questions file names: kept whole when a store is sampled."""
    if not is_dataset_json(path):
        raise DatasetError(
            f"{path} names files of a documents folder, and a store's chunks have no files: give the questions "
            "as LlamaIndex's dataset JSON with the store's chunk ids."
        )
    given = EmbeddingQAFinetuneDataset.from_json(path)
    return {d for docs in given.relevant_docs.values() for d in docs}


def memory_in_database(source: ChunkSource, base: Any, plan: FitPlan) -> Any:
    """The sentence memory of every chunk of the store, built as table (PostgreSQL) or collection (Qdrant)
    ``plan.memory_table`` in the store's own database, streamed; a build that died is resumed."""
    from adapterkit.memory.pg_memory import PgMemoryWriter
    from adapterkit.memory.qdrant_memory import QdrantMemoryWriter
    from adapterkit.stores.store_memory import memory_from_store
    from adapterkit.stores.stored_vectors import read_stored

    first = next(iter(read_stored(source.store, batch_size=1)), None)
    if first is None:
        raise ValueError(f"{source.origin} holds no chunks any more: write the corpus into it first.")
    rows = source.stored if source.stored is not None else len(source.corpus)
    ident = model_identity(base)
    # a fresh build each run: a build that died left its keys in the cache, so nothing is embedded twice
    options: Dict[str, Any] = dict(key_model=ident, chunk_model=ident, **plan.memory_options)
    dim, name = int(first.vectors.shape[1]), cast(str, plan.memory_table)
    if type(source.store).__name__ == "QdrantVectorStore":
        writer: Union[QdrantMemoryWriter, PgMemoryWriter] = QdrantMemoryWriter(source.store.client, name, dim, **options)
    else:  # IVFFlat builds far faster than HNSW on millions of keys
        writer = PgMemoryWriter(source.store.connection_string, name, dim, index="hnsw" if rows <= 200_000 else "ivfflat", **options)
    with writer:  # finished on leaving the block (left unfinished, never read, on an error)
        memory_from_store(
            source.store, base, writer, max_keys=plan.memory_options["max_keys"], cache=plan.cache, show_progress=plan.show_progress
        )
    return writer.finish()  # the finished memory (finishing twice is harmless)


def published_questions() -> EmbeddingQAFinetuneDataset:
    """The labelled side when you bring none: LlamaIndex's published Lyft 10-K questions (offline copy)."""
    return load_qa_datasets("published")[0]


def fit_documents(
    docs: Optional[PathLike] = None,
    out: PathLike = "adapter_model",
    *,
    store: Any = None,
    sample_chunks: Optional[int] = None,
    memory_table: Optional[str] = None,
    embed_model: Any = "default",
    questions: Optional[PathLike] = None,
    llm: Any = None,
    eval_chunks: Optional[int] = None,
    overwrite: bool = False,
    confirm: Optional[Callable[[str], bool]] = None,
    chunk_size: int = 1024,
    chunk_overlap: int = 200,
    cache: Union[EmbeddingCache, PathLike, None] = None,
    seed: int = 0,
    show_progress: bool = True,
    follow_symlinks: bool = False,
    **options: Any,
) -> FitResult:
    """Train an adapter for the chunks you will search, evaluate it honestly, and write a model folder.

    Args:
        docs: a folder of documents (read recursively: PDF, DOCX, HTML, Markdown, text, ...).
        out: the model folder; ``AdapterEmbeddingModel(base, out)`` serves it (LlamaIndex's class serves its
            adapter alone, without the memory).
        store: instead of ``docs``, a vector store holding your chunks and their vectors (a URI such
            as ``postgresql://user@host/db?table=chunks`` or a LlamaIndex store); nothing is re-embedded.
        sample_chunks: with ``store``: train on the chunks your questions name and this many others (a
            fixed sample) instead of every stored chunk, so memory stays flat as the store grows; the
            held-out questions are still ranked among every stored chunk (streamed exact search). No
            sentence memory is built from the sample (it would pull queries toward sampled chunks
            only): give ``memory_table`` for one of every chunk.
        memory_table: with ``store``: build the sentence memory of every stored chunk under this name in
            the store's own database (a ``PgMemory`` table, or a ``QdrantMemory`` collection;
            ``memory_keys_per_chunk`` caps its keys, ``memory_weight`` / ``memory_temperature`` set its
            pull), not as local files. ``report.md`` shows how to serve it with the folder's own memories.
        embed_model: the base model (a spec such as ``"default"`` or a LlamaIndex ``BaseEmbedding``).
        questions: your labelled questions: a .jsonl / .csv / .json file of rows with ``question``,
            ``file`` and an optional ``quote`` (``data/question_rows.py``), or LlamaIndex's dataset JSON
            with chunk ids; a fifth is held out for the evaluation, the rest may become a question memory.
        llm: without ``questions``, an LLM (spec or LlamaIndex ``LLM``) writes questions about held-out
            chunks for the evaluation.
        eval_chunks: the most chunks the LLM is asked about (default 40, at least 1; only with ``llm``).
        overwrite: replace a model folder fitted on other documents or with another model.
        confirm: asked before a paid LLM is called (None: go ahead; the command line asks).
        chunk_size: ``SentenceSplitter`` chunk size for folders (tokens; recorded in ``fit.json``).
        chunk_overlap: its overlap between chunks (tokens; recorded in ``fit.json``).
        cache: the embedding cache (None: ``$ADAPTERKIT_CACHE_DIR``).
        seed: seeds the held-out draws and training.
        follow_symlinks: read files that links in ``docs`` point to outside it (default: such links are
            skipped and listed in the report).
        options: ``FinetuneConfig`` fields (``epochs``, ``batch_size``, ...); the defaults are the ones
            the public benchmark suite measures.

    Example::

        result = fit_documents("my_docs", "my_model")
        print(result.report.read_text())
    """
    arguments = dict(locals())  # every parameter above, as given (the first statement: nothing else is local yet)
    return run_plan(plan_fit(arguments, arguments.pop("options")))


def run_plan(plan: FitPlan) -> FitResult:
    """The steps of a checked fit: read the chunks, choose the evaluation, train, build the database memory,
    score, write the folder. Everything is written aside and swapped in at the end: a run cut off at any
    step leaves the model folder as it was (the embedding cache keeps what was embedded)."""
    from adapterkit.pipeline.report import data_sources, write_fit_report

    started = time.perf_counter()
    base = resolve_embed_model(plan.embed_model)
    counter = CountingEmbedding(base, cache=False)  # below the cache: counts only texts the base model really embeds
    with FolderLock(plan.out):  # one fit at a time per folder
        source = read_chunks(plan, counter)
        opened: List[Any] = []  # a memory in the database this run opened, closed at the end
        stage: Optional[StagedFolder] = None
        try:
            previous = check_output_folder(plan.out, source.origin, model_identity(base), plan.overwrite)
            stage = StagedFolder(plan.out, source.origin, model_identity(base), keep_previous=previous is not None)
            work = stage.path  # every file of this run goes here; ``out`` changes only in the final swap
            seed_cache(get_cache(plan.cache), model_identity(base))  # their vectors ship for the default model: nothing to embed
            train, (yours, evaluation) = published_questions(), choose_evaluation(plan, source, work)
            engine = EmbeddingAdapterFinetuneEngine(
                train,
                counter,
                unlabeled_corpus=source.corpus,
                model_output_path=work,
                cache=plan.cache,
                show_progress=plan.show_progress,
                seed=plan.seed,
                target_questions=yours,
                **plan.engine_options,
            )
            engine.finetune()
            served, database_memory = serve(plan, source, counter, work, opened)
            frames = score(plan, evaluation, source, counter, served)
            write_text(work / MANIFEST, json.dumps(manifest_of(plan, source, base), indent=1))
            movement = query_movement(served, source.corpus, cache=plan.cache, seed=plan.seed)  # before the counts are read
            result = FitResult(
                plan.out,
                plan.out / "report.md",
                evaluation,
                comparison_table(frames) if frames else None,
                what_changed(previous, source),
                counter.counts,
                round(time.perf_counter() - started, 1),
                {},
                database_memory,
                data_sources(train, engine, source.corpus, yours),
            )
            result.summary = write_fit_report(result, engine, source, frames, movement, into=work)
            stage.commit()
            stage = None
            return result
        finally:
            if stage is not None:  # the run did not finish: the model folder is as it was
                stage.discard()
            for memory in opened:
                memory.close()
            if isinstance(plan.store, str):  # a store this run opened is closed: a local Qdrant folder stays locked while open
                close_store(source.store)


def read_chunks(plan: FitPlan, counter: CountingEmbedding) -> ChunkSource:
    """The chunks to search, and their base vectors: a folder's (embedded once, cached), or a store's (read, in part with
    ``sample_chunks``)."""
    if plan.sample_chunks is not None:
        keep = question_chunks(plan.questions) if plan.questions is not None else set()
        return sample_from_store(
            plan.store, counter, keep, plan.sample_chunks, cache=plan.cache, seed=plan.seed, show_progress=plan.show_progress
        )
    return source_of(
        plan.docs, plan.store, counter, plan.cache, plan.chunk_size, plan.chunk_overlap, plan.show_progress, plan.follow_symlinks
    )


def choose_evaluation(plan: FitPlan, source: ChunkSource, work: Path) -> Tuple[Optional[EmbeddingQAFinetuneDataset], Evaluation]:
    """``(your questions the run may learn from, the evaluation)``: a held-out fifth of your questions, an LLM's
    questions about sampled chunks, or none."""
    if plan.questions is None:
        if plan.llm is None:
            return None, Evaluation("none", "none: no labelled questions and no LLM were given")
        return None, llm_evaluation(source.corpus, plan.llm, work, plan.eval_chunks, plan.seed, plan.confirm, plan.show_progress)
    mine, missing = labelled_questions(plan.questions, source)
    yours, held = split_queries(mine, seed=plan.seed)
    if not held.queries or not yours.queries:
        raise DatasetError(
            f"{plan.questions} has {len(mine.queries)} usable question(s): at least 2 are needed (one to learn from, "
            "one held out to score)."
        )
    return yours, Evaluation(
        "questions",
        f"{len(held.queries)} of your {len(mine.queries)} questions ({Path(plan.questions).name}), held out of training",
        held,
        {"questions": len(held.queries), "memory_evidence": len(yours.queries), "left_out": missing},
    )


def serve(
    plan: FitPlan, source: ChunkSource, counter: CountingEmbedding, work: Path, opened: List[Any]
) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """The fitted model as it will be served, with the memory in the database (``memory_table``) beside the folder's."""
    from adapterkit.adapter_embedding import AdapterEmbeddingModel

    if plan.memory_table is None:
        return AdapterEmbeddingModel(counter, work, cache=plan.cache), None
    in_database = memory_in_database(source, counter, plan)
    opened.append(in_database)
    memories = (load_memories(work / MEMORY_DIR) if memory_folders(work / MEMORY_DIR) else []) + [in_database]
    info = {
        "name": plan.memory_table,
        "kind": type(in_database).__name__,
        "server": source.origin,
        "keys": in_database.key_count(),
        "max_keys": plan.memory_options["max_keys"],
    }
    return AdapterEmbeddingModel(counter, work, cache=plan.cache, memory=memories), info


def score(plan: FitPlan, evaluation: Evaluation, source: ChunkSource, counter: CountingEmbedding, served: Any) -> Dict[str, pd.DataFrame]:
    """Base next to adapter on the evaluation's questions (ranked among every stored chunk when training read a sample)."""
    if evaluation.dataset is None:
        return {}
    if source.stored is not None:
        return compare_on_store(evaluation.dataset, {"base": counter, "adapter": served}, source.store, top_k=10, cache=plan.cache)
    return {
        name: evaluate(evaluation.dataset, model, top_k=10, cache=plan.cache) for name, model in (("base", counter), ("adapter", served))
    }


def manifest_of(plan: FitPlan, source: ChunkSource, base: Any) -> Dict[str, Any]:
    """``fit.json``: what was fitted on, which the next run compares with to embed only what changed."""
    return {
        "origin": source.origin,
        "embed_model": model_identity(base),
        "embed_spec": plan.embed_model if isinstance(plan.embed_model, str) else None,
        "files": source.files,
        "chunks_of": source.chunks_of,
        "chunks": list(source.corpus),
        "stored_chunks": source.stored,
        "memory_table": plan.memory_table,
        **(
            {"chunk_size": plan.chunk_size, "chunk_overlap": plan.chunk_overlap, "follow_symlinks": plan.follow_symlinks}
            if plan.store is None
            else {}
        ),
    }
