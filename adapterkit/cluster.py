"""Embedding work on a Dask cluster: batches of texts embedded by parallel workers, each batch cached as it lands.

At millions of chunks the base model is the cost that grows (a sentence memory needs one call per
sentence; pseudo-queries one per drawn sentence). ``embed_on_cluster`` sends the texts the embedding
cache lacks to the workers of a Dask cluster, the user's own (``Client("tcp://scheduler:8786")``) or a
``LocalCluster`` of processes on this machine, one task per batch, and writes every finished batch
into the cache at once, from this process:

- no batch already in the cache is lost: a crash of this process or of a worker leaves each landed
  batch there, and a re-run sends only what is missing;
- a worker that dies loses the batches it was running (one per thread): the scheduler gives them to
  another worker (Dask retries a task whose worker died, ``distributed.scheduler.allowed-failures``
  times, default 3);
- a batch that fails (the model raised) stops the run after every other finished batch has landed;
- the texts are read in blocks and at most ``in_flight`` batches are out at once, so memory here
  stays bounded however many texts there are.

Workers build the base model themselves, once per worker process, from ``model``: a spec for
``resolve_embed_model`` (``"default"``, ``"minilm"``, ...), or a zero-argument function that returns a
``BaseEmbedding``: a module-level function importable on the workers, or a ``functools.partial``
(``partial(OnnxBGEEmbedding, num_threads=1)``: one thread per worker process). Each batch comes back
with the identity of the model that made it, and one that is not this process's model is refused.
The offline model's vectors do not depend on the batch a text lands in (it batches only texts of one
token length), so they equal those ``embed_texts`` makes, up to float rounding across thread counts.

Example::

    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        counts = embed_on_cluster(client, partial(OnnxBGEEmbedding, num_threads=1), sentences, kind="query")
    memory = CorpusMemory.from_corpus(corpus, resolve_embed_model("default"))   # every key is cached now
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.cache import EmbeddingCache, call_model, get_cache
from adapterkit.embeddings import model_identity, resolve_embed_model

ModelSource = Union[str, Callable[[], BaseEmbedding]]
_WORKER_MODELS: Dict[str, BaseEmbedding] = {}  # in each worker process: the model built from a source, once
_BUILDING = threading.Lock()  # a worker's threads build a model once between them


def worker_model(source: ModelSource) -> BaseEmbedding:
    """The base model of ``source`` in this process, built on first use (a source is known by its dask
    token, so the same function or ``functools.partial`` arriving in each task is built once)."""
    from dask.base import tokenize

    if isinstance(source, BaseEmbedding) or not (isinstance(source, str) or callable(source)):
        raise TypeError(
            "model is a spec (e.g. 'default') or a zero-argument function that returns the model, built on each "
            f"worker; not {type(source).__name__} (a model object cannot travel to the workers)."
        )
    key = source if isinstance(source, str) else tokenize(source)
    with _BUILDING:
        if key not in _WORKER_MODELS:
            _WORKER_MODELS[key] = source() if callable(source) else resolve_embed_model(source)
    return _WORKER_MODELS[key]


def embed_batch(source: ModelSource, texts: List[str], kind: str) -> np.ndarray:
    """One task: the base model's vectors of ``texts`` (``kind`` ``"text"`` or ``"query"``), float32."""
    vectors = np.asarray(call_model(worker_model(source), texts, kind), dtype=np.float32)
    if vectors.shape[0] != len(texts) or not np.isfinite(vectors).all():
        raise ValueError(f"The base model returned {vectors.shape} vectors (or a NaN) for {len(texts)} texts.")
    return vectors


def embed_on_cluster(
    client: Any,
    model: ModelSource,
    texts: Iterable[str],
    kind: str = "text",
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    batch_size: int = 128,
    in_flight: int = 8,
    block: int = 20_000,
    show_progress: bool = False,
) -> Dict[str, int]:
    """Embed every text the cache lacks on the cluster behind ``client``; each finished batch is cached at once.

    Args:
        client: a ``dask.distributed.Client``.
        model: a ``resolve_embed_model`` spec, or a zero-argument function returning the base model
            (each worker builds it once; this process builds it once too, for its cache identity).
        texts: the texts (any iterable, read ``block`` at a time).
        kind: ``"text"`` (documents) or ``"query"`` (queries, sentence keys, pseudo-queries).
        cache: the embedding cache (an ``EmbeddingCache``, a folder, or None for the default).
        batch_size: texts per task (a killed worker loses at most one batch's work).
        in_flight: batches out at once per worker thread (bounds memory here; keeps every thread busy).
        block: texts read and looked up in the cache at a time.
        show_progress: a tqdm bar over the batches.

    Returns:
        ``{"texts": texts read, "cached": already in the cache (or repeated), "embedded": embedded by the workers,
        "batches": tasks, "workers": worker processes at the start}`` (a text repeated within a block
        counts once as embedded).
    """
    try:
        from dask.distributed import as_completed
    except ImportError as exc:
        raise ImportError("embed_on_cluster needs Dask: pip install 'adapterkit[cluster]'") from exc

    if kind not in ("text", "query"):
        raise ValueError(f"kind must be 'text' or 'query', got {kind!r}.")
    if batch_size < 1 or in_flight < 1 or block < 1:
        raise ValueError(f"batch_size, in_flight and block must be >= 1, got {batch_size}, {in_flight}, {block}.")
    threads = client.nthreads()  # every worker, not a summary
    workers = len(threads)
    if not workers:
        raise ValueError("The cluster has no workers: start some (LocalCluster(n_workers=2), or dask worker <scheduler>) first.")
    store = get_cache(cache)
    if store.read_only:
        raise ValueError(f"The embedding cache {store.file} is read-only: the workers' vectors would be lost; give a writable cache.")
    ident = model_identity(worker_model(model))
    counts = {"texts": 0, "cached": 0, "embedded": 0, "batches": 0, "workers": workers}
    cap = in_flight * max(1, sum(threads.values()))
    bar = tqdm(desc="Embedding on the cluster", unit="batch", disable=not show_progress)
    pending = as_completed(loop=client.loop)
    out = 0
    failed: List[BaseException] = []

    def land(future: Any) -> None:
        nonlocal out
        out -= 1
        try:
            batch, vectors, made_by = future.result()
        except Exception as exc:  # failed on every try (its workers died, or the model raised)
            failed.append(exc)
            return
        finally:
            future.release()  # landed or failed: the cluster may forget it (a worker lost later is not asked to redo it)
        if made_by != ident:
            failed.append(
                ValueError(
                    f"A worker's model is {made_by}, this process's is {ident}: install the same model and versions on every machine."
                )
            )
            return
        store.put_many(ident, {EmbeddingCache.key(kind, t): v for t, v in zip(batch, vectors)})
        counts["embedded"] += len(batch)
        bar.update(1)

    try:
        for todo, read in _blocks(texts, kind, store, ident, block):
            counts["texts"] += read
            counts["cached"] += read - len(todo)
            for start in range(0, len(todo), batch_size):
                pending.add(client.submit(_task, model, todo[start : start + batch_size], kind, pure=False))
                counts["batches"] += 1
                out += 1
                while out >= cap:
                    land(next(pending))
                if failed:
                    break
            if failed:
                break
        for future in pending:  # every batch still out lands (or fails) before anything is raised
            land(future)
    finally:
        bar.close()
    if failed:
        raise RuntimeError(
            f"A batch failed on the cluster ({type(failed[0]).__name__}: {failed[0]}). The {counts['embedded']} texts "
            "embedded are in the cache: run embed_on_cluster again to embed only the rest."
        ) from failed[0]
    return counts


def _task(source: ModelSource, texts: List[str], kind: str) -> Tuple[List[str], np.ndarray, str]:
    return texts, embed_batch(source, texts, kind), model_identity(worker_model(source))


def _blocks(texts: Iterable[str], kind: str, store: EmbeddingCache, ident: str, block: int) -> Iterator[Tuple[List[str], int]]:
    """Per block of ``texts``: the distinct ones the cache lacks (shortest first: fewer token lengths per
    batch), and how many were read. Nothing is remembered across blocks, so memory stays bounded."""
    iterator = iter(texts)
    while True:
        chunk = list(itertools.islice(iterator, block))
        if not chunk:
            return
        fresh = list(dict.fromkeys(chunk))
        found = store.get_many(ident, [EmbeddingCache.key(kind, t) for t in fresh])
        yield sorted((t for t in fresh if EmbeddingCache.key(kind, t) not in found), key=len), len(chunk)
