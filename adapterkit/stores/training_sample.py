"""Read from a vector store only what training needs: the chunks that have pairs, and a sample of the rest.

``cache_stored_vectors`` hands over the whole store (every text in a dict; the engine then holds every
vector). At millions of chunks training needs far less: the chunks the labelled questions name, and
enough other chunks to rank them among (the held-out selection's distractors, and the target chunks
pseudo-queries are drawn from). ``sample_stored_corpus`` streams the store once and holds only those:

- every chunk in ``keep`` (an error names the ones the store lacks);
- ``sample`` others, chosen as the smallest values of a seeded hash of the node id (a bottom-k
  sample): every chunk is equally likely, and the choice does not depend on the order or the
  batches in which the store returns its rows;
- a duplicate node id is found from 8-byte hashes of every id (80 MB per 10M chunks, twice that
  while they are sorted at the end), so the stream holds no id list.

Their vectors go into the embedding cache under the base model's identity once a seeded sample of the
store's rows proved that the model made them, as ``cache_stored_vectors`` does, so the engine embeds
none of them. Memory is about ``(len(keep) + sample) * (dim * 4 + text)``
bytes, and the 8 bytes per stored chunk above.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from tqdm.auto import tqdm

from adapterkit.cache import EmbeddingCache, get_cache
from adapterkit.embeddings import model_identity
from adapterkit.stores.stored_vectors import VERIFY_ROWS, StoreCheck, StoredBatch, check_batch, id_hashes, read_stored, stored_dim


@dataclass
class StoredSample:
    """What ``sample_stored_corpus`` read: the corpus to train on and how it was drawn."""

    corpus: Dict[str, str]  # {node id: text}: the kept chunks, then the sampled ones
    kept: int  # chunks named by ``keep``
    sampled: int  # other chunks drawn
    rows: int  # rows the store holds (all were read once)
    seed: int = 0
    info: Dict[str, Any] = field(default_factory=dict)


def sample_stored_corpus(
    vector_store: Any,
    embed_model: BaseEmbedding,
    keep: Iterable[str],
    sample: int = 50_000,
    cache: Union[EmbeddingCache, str, os.PathLike, None] = None,
    seed: int = 0,
    batch_size: int = 10_000,
    verify: int = VERIFY_ROWS,
    batches: Optional[Iterator[StoredBatch]] = None,
    show_progress: bool = False,
) -> StoredSample:
    """The chunks named in ``keep`` and ``sample`` others, with their stored vectors put into the cache.

    Args:
        vector_store: a LlamaIndex ``PGVectorStore`` or ``QdrantVectorStore`` built with ``embed_model``.
        embed_model: the model that made the stored vectors (its cache identity is used).
        keep: node ids training cannot do without (the chunks of the labelled questions).
        sample: how many other chunks to draw (0: none); all of them when the store has fewer.
        cache: the embedding cache (an ``EmbeddingCache``, a folder, or None for the default).
        seed: the sample's seed.
        batch_size: rows per read.
        verify: as in ``cache_stored_vectors``: this many sampled rows are embedded again and compared
            before any stored vector enters the cache.
        batches: ``StoredBatch`` objects to use instead of reading ``vector_store``.
        show_progress: a tqdm bar over the rows.

    Example::

        sample = sample_stored_corpus(pg_store, base_model, keep={d for docs in relevant_docs.values() for d in docs})
        train = EmbeddingQAFinetuneDataset(queries=queries, corpus=sample.corpus, relevant_docs=relevant_docs)
        EmbeddingAdapterFinetuneEngine(train, base_model).finetune()   # embeds the queries only
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"sample must be a count of chunks (int >= 0), got {sample!r}.")
    wanted = set(keep)
    store = get_cache(cache)
    ident = model_identity(embed_model)
    check = StoreCheck(verify, seed)
    staging = f"unverified:{uuid.uuid4().hex}:{ident}"  # the kept rows, until the store passed its check
    kept: Dict[str, str] = {}
    hashes: List[np.ndarray] = []  # every id's hash, to find a duplicate id without holding the ids
    pool = _BottomK(sample)
    dim: Optional[int] = None
    rows = 0
    bar = tqdm(desc="Reading stored vectors", unit="row", disable=not show_progress)
    try:
        for batch in batches if batches is not None else read_stored(vector_store, batch_size):
            dim = dim or stored_dim(batch)
            check_batch(batch, dim)
            check.first(batch, embed_model, dim)
            h = id_hashes(batch.ids, seed)
            hashes.append(h)
            mine = np.fromiter((i in wanted for i in batch.ids), dtype=bool, count=len(batch.ids))
            if mine.any():
                rows_kept = np.flatnonzero(mine)
                store.put_many(staging, {EmbeddingCache.key("text", batch.texts[r]): batch.vectors[r] for r in rows_kept})
                kept.update((batch.ids[r], batch.texts[r]) for r in rows_kept)
            pool.offer(batch, h, ~mine)
            check.offer(batch, h)
            rows += len(batch.ids)
            bar.update(len(batch.ids))
        bar.close()
        if not rows or dim is None:  # dim is None only when no batch was read
            raise ValueError("The vector store holds no nodes: write the corpus into it first.")
        _check_unique(np.concatenate(hashes))
        missing = [i for i in wanted if i not in kept]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(wanted)} chunks the questions name are not in the store (e.g. "
                f"{sorted(missing)[:3]}): drop those questions, or write the chunks into the store first."
            )
        check.verify(embed_model, dim)
        ids, texts, vectors = pool.result()
        store.put_many(ident, {EmbeddingCache.key("text", t): v for t, v in zip(texts, vectors)})
        store.move(staging, ident)
    finally:
        store.drop(staging)
    corpus = dict(kept)
    corpus.update(zip(ids, texts))
    return StoredSample(corpus, kept=len(kept), sampled=len(ids), rows=rows, seed=seed, info={"dim": dim, "model": ident, "sample": sample})


class _BottomK:
    """The ``k`` offered rows of smallest hash, in fixed slots (a row leaves when a smaller one comes)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.hash = np.zeros(0, dtype=np.int64)
        self.ids: List[str] = []
        self.texts: List[str] = []
        self.vectors: Optional[np.ndarray] = None  # (up to k, dim), grown as rows come

    def offer(self, batch: StoredBatch, h: np.ndarray, allowed: np.ndarray) -> None:
        rows = np.flatnonzero(allowed)
        if len(self.hash) == self.k:
            rows = rows[h[rows] < self.hash.max()] if self.k else rows[:0]
        if not len(rows):
            return
        held = len(self.hash)
        both = np.concatenate([self.hash, h[rows]])
        best = np.argpartition(both, self.k - 1)[: self.k] if len(both) > self.k else np.arange(len(both))
        if self.vectors is None or len(self.vectors) < len(best):  # doubling, so a large k costs nothing on a small store
            grown = np.zeros((min(self.k, max(len(best), 2 * held)), batch.vectors.shape[1]), dtype=np.float32)
            grown[:held] = self.vectors[:held] if self.vectors is not None else grown[:0]
            self.vectors = grown
        stay = np.zeros(held, dtype=bool)
        stay[best[best < held]] = True
        incoming = rows[best[best >= held] - held]
        slots = np.concatenate([np.flatnonzero(~stay), np.arange(held, len(best))])  # freed slots, then new ones
        self.hash = np.concatenate([self.hash, np.zeros(len(best) - held, dtype=np.int64)])
        self.ids += [""] * (len(best) - held)
        self.texts += [""] * (len(best) - held)
        self.hash[slots] = h[incoming]
        self.vectors[slots] = batch.vectors[incoming]
        for slot, r in zip(slots.tolist(), incoming.tolist()):
            self.ids[slot], self.texts[slot] = batch.ids[r], batch.texts[r]

    def result(self) -> Tuple[List[str], List[str], np.ndarray]:
        """ids, texts and vectors, smallest hash first (a stable order for a seed)."""
        order = np.argsort(self.hash, kind="stable")
        vectors = self.vectors[: len(order)][order] if self.vectors is not None else np.zeros((0, 0), np.float32)
        return [self.ids[i] for i in order], [self.texts[i] for i in order], vectors


def _check_unique(hashes: np.ndarray) -> None:
    """Refuse a store that holds a node id twice (ids key the cache, the pairs and the memories)."""
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        raise ValueError(
            f"The store holds {len(np.unique(repeated))} node id(s) more than once: ids must be unique; delete the "
            "duplicate rows (or re-index) first."
        )
