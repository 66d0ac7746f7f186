"""``CorpusMemory``: a query-side memory of the corpus being searched, kept beside the adapter.

Keys are query-like texts about each chunk (its sentences, or labelled questions), embedded once by
the base model as queries; each key points at its chunk's frozen document vector. At query time the
``top_k`` keys closest to the query are looked up, and the query is pulled toward their chunks:

    out = normalize(adapter(q)) + weight * sum_i softmax(temperature * cos(q, key_i)) * chunk[owner_i]

A long chunk's vector never saw text past the model's window (bge reads 512 tokens); its sentences as
keys reach that text. Documents are never re-embedded. The memory is keyed by chunk id: ``add``,
``remove`` and ``update`` follow an index as it changes, and ``save`` / ``load`` use their own folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.atomic import atomic_path, write_text
from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.documents import chunk_sentences
from adapterkit.embeddings import model_identity
from adapterkit.errors import AdapterkitError
from adapterkit.memory.keys import INDEX_KINDS, MAX_PULL, KeyIndex, first_non_finite_row, make_index, pull_ok
from adapterkit.memory.rows import check_keys_per_chunk, check_max_keys, checked_hashes
from adapterkit.metrics import unit_rows

MEMORY_DIR = "memory"  # beside the adapter's files in a model folder; one subfolder per memory
MEMORY_FILE = "memory.json"
ARRAYS = ("chunks", "keys", "owner")  # saved as <name>.npy beside memory.json
PathLike = Union[str, "os.PathLike[str]"]


class MemoryLoadError(AdapterkitError, ValueError):
    """A memory folder is missing, incomplete or damaged."""


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class CorpusMemory:
    """Keys pointing at chunks of one corpus, looked up for each query (see the module docstring).

    Args:
        dim: embedding dimension.
        weight: how far the memory pulls a query (0: the adapter alone).
        temperature: sharpness of the key match (100: in effect, the few closest keys).
        top_k: keys looked up per query; the softmax runs over these (with temperature 100 the keys
            further away weigh less than e^-10 of the best).
        index: how keys are looked up (``adapterkit.memory.keys.make_index``): ``"exact"`` (a matrix
            product over every key), ``"ivf"`` (faiss, approximate, for millions of keys), or
            ``"auto"`` (exact up to 200,000 keys).
        key_dim: the keys' dimension when the queries' model is not the chunks' (default ``dim``).
        max_keys: sentence keys per chunk at most (``from_corpus`` / ``update``; a fixed sample of the
            chunk's sentences): caps the base-model calls at corpus scale (None: every sentence).

    Example::

        memory = CorpusMemory.from_corpus(val_dataset.corpus, resolve_embed_model("default"))
        model = AdapterEmbeddingModel(base, "model_output", memory=memory)
        memory.update(new_corpus, base)   # re-embeds only new or changed chunks; drops deleted ones
        memory.save("model_output/memory")
    """

    def __init__(
        self,
        dim: int,
        weight: float = 0.25,
        temperature: float = 100.0,
        top_k: int = 32,
        index: str = "auto",
        key_dim: Optional[int] = None,
        max_keys: Optional[int] = None,
    ) -> None:
        key_dim = dim if key_dim is None else key_dim  # another one when the queries come from another model than the chunks
        self.max_keys = check_max_keys(max_keys)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (dim, weight, temperature, top_k, key_dim))
        if not (
            numbers
            and isinstance(dim, int)
            and isinstance(key_dim, int)
            and dim > 0
            and key_dim > 0
            and top_k >= 1
            and pull_ok(weight, temperature)
            and index in INDEX_KINDS
        ):
            raise ValueError(
                f"CorpusMemory needs dim > 0, key_dim > 0, 0 <= weight <= {MAX_PULL:g}, 0 < temperature <= {MAX_PULL:g}, "
                f"top_k >= 1 and index in "
                f"{INDEX_KINDS}; got {dim!r}, {key_dim!r}, {weight!r}, {temperature!r}, {top_k!r}, {index!r}."
            )
        self.dim, self.weight, self.temperature, self.top_k, self.index_kind = dim, float(weight), float(temperature), int(top_k), index
        self.key_dim = key_dim
        # identities of the models behind the keys and the chunk vectors, where known (from_corpus records them)
        self.key_model: Optional[str] = None
        self.chunk_model: Optional[str] = None
        self.chunk_ids: List[str] = []
        self.chunk_hash: List[str] = []
        self.chunks = np.zeros((0, dim), dtype=np.float32)  # (m, d) normalised chunk vectors
        self.keys = np.zeros((0, key_dim), dtype=np.float32)  # (n, key_dim) normalised key vectors
        self.owner = np.zeros(0, dtype=np.int64)  # (n,) row in chunks of each key
        self._index: Optional[KeyIndex] = None

    # ------------------------------------------------------------------ building

    def with_pull(self, weight: float, temperature: Optional[float] = None) -> "CorpusMemory":
        """The same keys and chunks (shared, not copied) with another pull; this memory is left as it is."""
        temperature = self.temperature if temperature is None else temperature
        if not pull_ok(weight, temperature):
            raise ValueError(
                f"A pull needs 0 <= weight <= {MAX_PULL:g} and 0 < temperature <= {MAX_PULL:g}; got {weight!r}, {temperature!r}."
            )
        other = copy.copy(self)
        other.weight, other.temperature = float(weight), float(temperature)
        return other

    @classmethod
    def from_corpus(
        cls,
        corpus: Mapping[str, str],
        embed_model: BaseEmbedding,
        doc_vectors: Optional[np.ndarray] = None,
        cache: Union[EmbeddingCache, PathLike, None] = None,
        show_progress: bool = False,
        index_model: Optional[BaseEmbedding] = None,
        **options: Any,
    ) -> "CorpusMemory":
        """A memory whose keys are the sentences (6+ words) of each chunk of ``corpus``.

        Args:
            corpus: ``{chunk id: text}``.
            embed_model: the base model (sentences are embedded as queries, chunks as documents).
            doc_vectors: the chunks' base vectors in ``corpus`` order, when already at hand (e.g. read
                from a vector store); else embedded (through the cache).
            index_model: the model of the chunk vectors when it is not ``embed_model`` (an index built
                by an older model, queried by ``embed_model``); the memory records both and ``update``
                embeds chunks with this one.
            options: ``CorpusMemory`` arguments (weight, temperature, top_k, index, key_dim).
        """
        ids = list(corpus)
        if doc_vectors is None:
            doc_vectors = embed_texts(
                index_model or embed_model, [corpus[c] for c in ids], "text", cache=cache, show_progress=show_progress
            )
        memory = cls(int(np.asarray(doc_vectors).shape[1]), **options)
        memory.key_model, memory.chunk_model = model_identity(embed_model), model_identity(index_model or embed_model)
        memory.update(corpus, embed_model, doc_vectors=doc_vectors, cache=cache, show_progress=show_progress, index_model=index_model)
        return memory

    @classmethod
    def from_pairs(
        cls, key_vectors: np.ndarray, chunk_ids: Sequence[str], chunk_vectors: Mapping[str, np.ndarray], **options: Any
    ) -> "CorpusMemory":
        """A memory whose keys are given vectors, e.g. labelled questions pointing at their relevant chunks.

        Args:
            key_vectors: ``(n, key_dim)`` base query embeddings.
            chunk_ids: the chunk each key points at.
            chunk_vectors: ``{chunk id: (d,) base document vector}`` for every id in ``chunk_ids``.
        """
        key_vectors = np.asarray(key_vectors, dtype=np.float32)
        ids = list(dict.fromkeys(map(str, chunk_ids)))
        dim = int(np.asarray(chunk_vectors[ids[0]]).shape[-1]) if ids else int(key_vectors.shape[1])
        memory = cls(dim, key_dim=int(key_vectors.shape[1]), **options)
        row = {c: i for i, c in enumerate(ids)}
        memory.add_chunks(ids, np.stack([chunk_vectors[c] for c in ids]), key_vectors, np.array([row[str(c)] for c in chunk_ids]))
        return memory

    def add(self, chunk_id: str, chunk_vector: np.ndarray, key_vectors: np.ndarray, text_hash: str = "") -> None:
        """Add (or replace) one chunk with its keys."""
        key_vectors = np.asarray(key_vectors, dtype=np.float32).reshape(-1, self.key_dim)
        self.add_chunks(
            [chunk_id], np.asarray(chunk_vector).reshape(1, self.dim), key_vectors, np.zeros(len(key_vectors), np.int64), [text_hash]
        )

    def add_chunks(
        self,
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        text_hashes: Optional[Sequence[str]] = None,
    ) -> None:
        """Add (or replace) many chunks at once: one copy of the arrays, however many chunks.

        Args:
            chunk_ids: the chunks' ids (unique).
            chunk_vectors: ``(m, d)`` their base document vectors.
            key_vectors: ``(n, key_dim)`` base query vectors of the keys.
            key_chunk: ``(n,)`` for each key, its chunk's position in ``chunk_ids``.
            text_hashes: per chunk, a hash of its text (``update`` compares them).
        """
        chunk_vectors = np.asarray(chunk_vectors, dtype=np.float32).reshape(len(chunk_ids), self.dim)
        key_vectors = np.asarray(key_vectors, dtype=np.float32).reshape(-1, self.key_dim)
        key_chunk = np.asarray(key_chunk, dtype=np.int64).reshape(len(key_vectors))
        if len(set(chunk_ids)) != len(chunk_ids) or (len(key_chunk) and not 0 <= key_chunk.min() <= key_chunk.max() < len(chunk_ids)):
            raise ValueError("chunk_ids must be unique and key_chunk must hold positions in chunk_ids.")
        if not (np.isfinite(key_vectors).all() and np.isfinite(chunk_vectors).all()):
            raise ValueError("Memory vectors must be finite (a NaN or inf came from the base model).")
        check_keys_per_chunk(chunk_ids, key_chunk, self.max_keys)
        hashes = checked_hashes(chunk_ids, text_hashes)
        self.remove(chunk_ids)
        start = len(self.chunk_ids)
        self.chunk_ids += [str(c) for c in chunk_ids]
        self.chunk_hash += hashes
        self.chunks = np.concatenate([self.chunks, unit_rows(chunk_vectors)])
        self.keys = np.concatenate([self.keys, unit_rows(key_vectors)])
        self.owner = np.concatenate([self.owner, key_chunk + start])
        self._index = None

    def remove(self, chunk_ids: Iterable[str]) -> int:
        """Drop chunks (and their keys); returns how many were held."""
        drop = set(map(str, chunk_ids)) & set(self.chunk_ids)
        if not drop:
            return 0
        keep = np.array([c not in drop for c in self.chunk_ids], dtype=bool)
        new_row = np.cumsum(keep) - 1
        key_keep = keep[self.owner]
        self.keys, self.owner = self.keys[key_keep], new_row[self.owner[key_keep]]
        self.chunks = self.chunks[keep]
        self.chunk_ids = [c for c, k in zip(self.chunk_ids, keep) if k]
        self.chunk_hash = [h for h, k in zip(self.chunk_hash, keep) if k]
        self._index = None
        return len(drop)

    def update(
        self,
        corpus: Mapping[str, str],
        embed_model: BaseEmbedding,
        doc_vectors: Optional[np.ndarray] = None,
        cache: Union[EmbeddingCache, PathLike, None] = None,
        show_progress: bool = False,
        index_model: Optional[BaseEmbedding] = None,
    ) -> Dict[str, int]:
        """Follow ``corpus`` (the whole corpus as it is now): new and changed chunks are embedded and
        added, chunks no longer in it are removed, unchanged ones are left as they are.

        Keys are embedded by ``embed_model``, chunks by ``index_model`` (default ``embed_model``); a
        memory that records its models refuses others.

        Returns ``{"added": .., "changed": .., "removed": .., "unchanged": ..}``.
        """
        self._check_models(embed_model, index_model)
        held = dict(zip(self.chunk_ids, self.chunk_hash))
        ids = list(corpus)
        hashes = {c: _text_hash(corpus[c]) for c in ids}
        todo = [c for c in ids if held.get(c) != hashes[c]]
        removed = self.remove([c for c in held if c not in corpus])
        counts = {
            "added": sum(c not in held for c in todo),
            "changed": sum(c in held for c in todo),
            "removed": removed,
            "unchanged": len(ids) - len(todo),
        }
        if not todo:
            return counts
        docs, keys, key_chunk = chunk_keys(
            corpus, todo, embed_model, index_model, doc_vectors, cache, show_progress, self.key_dim, self.max_keys
        )
        self.add_chunks(todo, docs, keys, key_chunk, [hashes[c] for c in todo])
        return counts

    def _check_models(self, embed_model: BaseEmbedding, index_model: Optional[BaseEmbedding]) -> None:
        check_models(self.key_model, self.chunk_model, embed_model, index_model)

    # ------------------------------------------------------------------ query time

    @property
    def index(self) -> KeyIndex:
        """The key lookup (built on first use, rebuilt after a change)."""
        if self._index is None:
            self._index = make_index(self.keys, self.index_kind)
        return self._index

    def use_index(self, index: KeyIndex) -> None:
        """Look keys up with a prebuilt ``index`` over ``self.keys`` (e.g. an ``IVFIndex`` with another
        ``nprobe``) until the keys change."""
        self._index = index

    def pull(self, queries: torch.Tensor) -> torch.Tensor:
        """``weight * sum softmax(temperature * cos) * chunk`` over each query's ``top_k`` keys: ``(Q, d)``."""
        out = torch.zeros(len(queries), self.dim, dtype=torch.float32, device=queries.device)
        if not len(self.keys) or not self.weight or not len(queries):
            return out
        q = F.normalize(queries.detach().float(), dim=-1).cpu().numpy()
        sims, rows = self.index.search(q, min(self.top_k, len(self.keys)))
        found = rows >= 0  # an approximate index may find fewer than top_k keys
        owners = self.owner[np.where(found, rows, 0)]  # (Q, k) chunk rows
        vectors = torch.as_tensor(np.asarray(self.chunks[owners.ravel()], dtype=np.float32)).view(*owners.shape, self.dim)
        return pull_from(np.where(found, sims, -np.inf), vectors, self.temperature, self.weight).to(queries.device)

    def apply(self, adapted: torch.Tensor, base_queries: torch.Tensor) -> torch.Tensor:
        """The query vectors with the memory: ``normalize(adapted) + pull(base_queries)``."""
        return apply_memories(adapted, base_queries, [self])

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def get_config_dict(self) -> Dict[str, Any]:
        return {
            "dim": self.dim,
            "key_dim": self.key_dim,
            "weight": self.weight,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "index": self.index_kind,
            "max_keys": self.max_keys,
            "key_model": self.key_model,
            "chunk_model": self.chunk_model,
        }

    # ------------------------------------------------------------------ files

    def save(self, folder: PathLike) -> None:
        """Write ``memory.json`` (options, chunk ids) and the arrays as ``.npy`` files into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / MEMORY_FILE).unlink(missing_ok=True)  # memory.json last: a half-written folder has none
        for name in ARRAYS:
            with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(getattr(self, name)), allow_pickle=False)
        meta = {**self.get_config_dict(), "chunk_ids": self.chunk_ids, "chunk_hash": self.chunk_hash}
        write_text(out / MEMORY_FILE, json.dumps(meta))

    @classmethod
    def load(cls, folder: PathLike, mmap: bool = True) -> "CorpusMemory":
        """Read a memory written by ``save``; large arrays stay on disk (memory-mapped) until read.

        Only JSON and ``.npy`` arrays (``allow_pickle=False``) are read: nothing is imported or unpickled.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / MEMORY_FILE).read_text(encoding="utf-8"))
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False) for name in ARRAYS}
        except (OSError, ValueError) as exc:
            raise MemoryLoadError(f"{folder} is not a readable corpus memory ({exc}); rebuild it with CorpusMemory.from_corpus.") from exc
        try:
            memory = cls(
                **{k: meta[k] for k in ("dim", "weight", "temperature", "top_k", "index")},
                key_dim=meta.get("key_dim"),
                max_keys=meta.get("max_keys"),
            )
            ids, hashes = [str(c) for c in meta["chunk_ids"]], [str(h) for h in meta["chunk_hash"]]
            memory.key_model, memory.chunk_model = (_optional_str(meta.get(k)) for k in ("key_model", "chunk_model"))
        except (KeyError, TypeError, ValueError) as exc:
            raise MemoryLoadError(f"{folder / MEMORY_FILE} does not describe a memory ({exc}); rebuild the memory.") from exc
        chunks, keys, owner = arrays["chunks"], arrays["keys"], arrays["owner"]
        fits = (
            chunks.ndim == keys.ndim == 2
            and chunks.shape[1] == memory.dim
            and keys.shape[1] == memory.key_dim
            and owner.shape == (len(keys),)
            and chunks.dtype == keys.dtype == np.float32
            and owner.dtype == np.int64
            and len(ids) == len(hashes) == len(chunks)
            and (not len(owner) or 0 <= owner.min() <= owner.max() < len(chunks))
        )
        if not fits:
            raise MemoryLoadError(f"The arrays in {folder} do not fit its {MEMORY_FILE}; rebuild the memory.")
        for name, array in (("chunks", chunks), ("keys", keys)):  # a NaN here would serve NaN query vectors
            if (row := first_non_finite_row(array)) is not None:
                raise MemoryLoadError(f"{folder / f'{name}.npy'} holds NaN or infinite values (row {row}); rebuild the memory.")
        memory.chunks, memory.keys, memory.owner = chunks, keys, np.asarray(owner)
        memory.chunk_ids, memory.chunk_hash = ids, hashes
        return memory


def _optional_str(value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"a model identity is a string, not {type(value).__name__}")
    return value


class MemoryWriter:
    """Write a memory too large for RAM to a folder, batch by batch (``CorpusMemory.load`` maps it back).

    Args:
        folder: where ``memory.json`` and the ``.npy`` arrays go.
        dim: embedding dimension.
        options: ``CorpusMemory`` options (weight, temperature, top_k, index).

    Example::

        with MemoryWriter("memory", 384, index="ivf") as writer:
            for ids, chunk_vecs, key_vecs, key_chunk in batches_from_my_vector_store():
                writer.add(ids, chunk_vecs, key_vecs, key_chunk)
        memory = CorpusMemory.load("memory")
    """

    def __init__(self, folder: PathLike, dim: int, **options: Any) -> None:
        self.folder, self.dim, self.options = Path(folder), dim, {"dim": dim, **CorpusMemory(dim, **options).get_config_dict()}
        self.key_dim = self.options["key_dim"]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.chunk_ids: List[str] = []
        self.chunk_hash: List[str] = []
        self.counts = {name: 0 for name in ARRAYS}
        self._raw = {name: open(self.folder / f".{name}.raw", "wb") for name in ARRAYS}

    def add(
        self,
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        text_hashes: Optional[Sequence[str]] = None,
    ) -> None:
        """Append chunks and their keys (as ``CorpusMemory.add_chunks``; ids must be new)."""
        chunk_vectors = unit_rows(np.asarray(chunk_vectors, dtype=np.float32).reshape(len(chunk_ids), self.dim))
        key_vectors = unit_rows(np.asarray(key_vectors, dtype=np.float32).reshape(-1, self.key_dim))
        key_chunk = np.asarray(key_chunk, dtype=np.int64).reshape(len(key_vectors))
        if not (np.isfinite(chunk_vectors).all() and np.isfinite(key_vectors).all()):
            raise ValueError("Memory vectors must be finite (a NaN or inf came from the base model).")
        if len(key_chunk) and not 0 <= key_chunk.min() <= key_chunk.max() < len(chunk_ids):
            raise ValueError("key_chunk must hold positions in chunk_ids.")
        check_keys_per_chunk(chunk_ids, key_chunk, self.options["max_keys"])
        hashes = checked_hashes(chunk_ids, text_hashes)
        for name, array in (("chunks", chunk_vectors), ("keys", key_vectors), ("owner", key_chunk + self.counts["chunks"])):
            self._raw[name].write(np.ascontiguousarray(array).tobytes())
            self.counts[name] += len(array)
        self.chunk_ids += [str(c) for c in chunk_ids]
        self.chunk_hash += hashes

    def close(self) -> Path:
        """Turn the raw batches into ``.npy`` files and write ``memory.json``; returns the folder."""
        if len(set(self.chunk_ids)) != len(self.chunk_ids):
            raise ValueError("A chunk id was added twice; ids in a memory are unique.")
        for name, fh in self._raw.items():
            fh.close()
            shape = (self.counts[name], self.key_dim if name == "keys" else self.dim) if name != "owner" else (self.counts[name],)
            dtype = np.dtype(np.int64 if name == "owner" else np.float32)
            with atomic_path(self.folder / f"{name}.npy") as tmp, open(tmp, "wb") as out, open(self.folder / f".{name}.raw", "rb") as raw:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
                )
                shutil.copyfileobj(raw, out, 1 << 24)
            (self.folder / f".{name}.raw").unlink()
        meta = {**self.options, "chunk_ids": self.chunk_ids, "chunk_hash": self.chunk_hash}
        write_text(self.folder / MEMORY_FILE, json.dumps(meta))
        return self.folder

    def __enter__(self) -> "MemoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            for fh in self._raw.values():
                fh.close()


def holds_memory(folder: PathLike) -> bool:
    """Whether ``folder`` holds a saved ``CorpusMemory``."""
    return (Path(folder) / MEMORY_FILE).is_file()


def memory_folders(folder: PathLike) -> List[Path]:
    """``folder`` if it holds a memory, else its subfolders that do (by name)."""
    folder = Path(folder)
    if holds_memory(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and holds_memory(p)) if folder.is_dir() else []


def load_memories(folder: PathLike) -> List[CorpusMemory]:
    """The memories saved in ``folder``: the folder itself, or each subfolder that holds one (by name)."""
    found = memory_folders(folder)
    if not found:
        raise MemoryLoadError(f"{folder} holds no corpus memory (no {MEMORY_FILE} in it or in a subfolder).")
    return [CorpusMemory.load(p) for p in found]


def chunk_keys(
    corpus: Mapping[str, str],
    todo: Sequence[str],
    embed_model: BaseEmbedding,
    index_model: Optional[BaseEmbedding],
    doc_vectors: Optional[np.ndarray],
    cache: Any,
    show_progress: bool,
    key_dim: int,
    max_keys: Optional[int] = None,
) -> tuple:
    """For the chunks ``todo`` of ``corpus``: their vectors (from ``doc_vectors``, in ``corpus`` order, else
    embedded by the index model), their sentences' vectors as queries (the keys; at most ``max_keys`` per
    chunk), and each key's chunk row."""
    if doc_vectors is not None:
        position = {c: i for i, c in enumerate(corpus)}
        docs = np.asarray(doc_vectors, dtype=np.float32)[[position[c] for c in todo]]
    else:
        docs = embed_texts(index_model or embed_model, [corpus[c] for c in todo], "text", cache=cache, show_progress=show_progress)
    sentences = [chunk_sentences(corpus[c], most=max_keys) for c in todo]  # a chunk without a 6+ word sentence is held with no key
    flat = [x for found in sentences for x in found]
    keys = (
        embed_texts(embed_model, flat, "query", cache=cache, show_progress=show_progress, purpose="sentences (memory keys)")
        if flat
        else np.zeros((0, key_dim), np.float32)
    )
    return docs, keys, np.repeat(np.arange(len(todo)), [len(found) for found in sentences])


def check_models(
    key_model: Optional[str], chunk_model: Optional[str], embed_model: BaseEmbedding, index_model: Optional[BaseEmbedding]
) -> None:
    """Refuse models other than those a memory's keys and chunk vectors came from (identities recorded, or None)."""
    pairs = (("keys", key_model, embed_model, "embed_model"), ("chunk vectors", chunk_model, index_model or embed_model, "index_model"))
    for what, recorded, model, arg in pairs:
        if recorded is not None and model_identity(model) != recorded:
            hint = (
                "; an index built by another model than the queries needs index_model=<that model>"
                if arg == "index_model" and index_model is None
                else ""
            )
            raise ValueError(
                f"This memory's {what} are vectors of {recorded}, not of {model_identity(model)}: pass the model "
                f"they came from as {arg}{hint}."
            )


def pull_from(sims: np.ndarray, chunk_vectors: torch.Tensor, temperature: float, weight: float) -> torch.Tensor:
    """``weight * sum_i softmax(temperature * sims)_i * chunk_i`` per query: ``sims`` ``(Q, k)`` (-inf where no
    key was found), ``chunk_vectors`` ``(Q, k, d)`` the found keys' chunks. Every memory pulls through here."""
    attention = torch.softmax(temperature * torch.as_tensor(sims), dim=-1)  # (Q, k)
    attention = torch.nan_to_num(attention)  # a query with no key found at all: no pull
    pulled = (attention[..., None] * chunk_vectors).sum(1)  # keys of one chunk add up
    return weight * pulled


def apply_memories(adapted: torch.Tensor, base_queries: torch.Tensor, memories: Sequence[CorpusMemory]) -> torch.Tensor:
    """``normalize(adapted)`` plus the pull of every memory (each looks its keys up with the base query)."""
    if not memories:
        return adapted
    out = F.normalize(adapted, dim=-1)
    for memory in memories:
        out = out + memory.pull(base_queries)
    return out
