"""What a memory kept in a database (``PgMemory``, ``QdrantMemory``) does the same way as the others.

A subclass looks keys up (``lookup``), lists the chunks it holds (``chunk_hashes``) and replaces chunks
in one write (``_replace``: drop some chunks, then write others with their keys). This class pulls
queries from what ``lookup`` finds and follows the index (``add_chunks``, ``update``) as
``CorpusMemory`` does, with the same checks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from llama_index.core.base.embeddings.base import BaseEmbedding

from adapterkit.memory.corpus_memory import CorpusMemory, _text_hash, apply_memories, check_models, chunk_keys, pull_from
from adapterkit.memory.rows import checked_hashes, checked_rows


class DatabaseMemory:
    """Pull and index-following shared by the memories kept in a database (see the module's docstring)."""

    dim: int
    key_dim: int
    weight: float
    temperature: float
    max_keys: Optional[int]
    key_model: Optional[str]
    chunk_model: Optional[str]

    def lookup(self, queries: np.ndarray) -> Tuple[np.ndarray, List[List[str]], np.ndarray]:
        raise NotImplementedError

    def chunk_hashes(self) -> Dict[str, str]:
        raise NotImplementedError

    def _replace(
        self,
        drop: Sequence[str],
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        hashes: Sequence[str],
    ) -> None:
        raise NotImplementedError

    def pull(self, queries: torch.Tensor) -> torch.Tensor:
        """As ``CorpusMemory.pull``: ``weight * sum softmax(temperature * cos) * chunk`` over the top keys."""
        if not len(queries) or not self.weight:
            return torch.zeros(len(queries), self.dim, dtype=torch.float32, device=queries.device)
        sims, _, chunks = self.lookup(F.normalize(queries.detach().float(), dim=-1).cpu().numpy())
        return pull_from(sims, torch.as_tensor(chunks), self.temperature, self.weight).to(queries.device)

    def apply(self, adapted: torch.Tensor, base_queries: torch.Tensor) -> torch.Tensor:
        return apply_memories(adapted, base_queries, [cast(CorpusMemory, self)])  # it needs only pull, which this class has

    def add_chunks(
        self,
        chunk_ids: Sequence[str],
        chunk_vectors: np.ndarray,
        key_vectors: np.ndarray,
        key_chunk: np.ndarray,
        text_hashes: Optional[Sequence[str]] = None,
    ) -> None:
        """Add chunks with their keys in one write; a chunk already held is replaced."""
        ids = [str(c) for c in chunk_ids]
        rows = checked_rows(ids, chunk_vectors, key_vectors, key_chunk, self.dim, self.key_dim, self.max_keys)
        self._replace(ids, ids, *rows, checked_hashes(ids, text_hashes))

    def update(
        self,
        corpus: Mapping[str, str],
        embed_model: BaseEmbedding,
        doc_vectors: Optional[np.ndarray] = None,
        cache: Any = None,
        show_progress: bool = False,
        index_model: Optional[BaseEmbedding] = None,
    ) -> Dict[str, int]:
        """Follow ``corpus`` as ``CorpusMemory.update`` does (models checked against those recorded): removals
        and additions in one write."""
        check_models(self.key_model, self.chunk_model, embed_model, index_model)
        held = self.chunk_hashes()
        ids = list(corpus)
        hashes = {c: _text_hash(corpus[c]) for c in ids}
        todo = [c for c in ids if held.get(c) != hashes[c]]
        gone = [c for c in held if c not in corpus]
        counts = {
            "added": sum(c not in held for c in todo),
            "changed": sum(c in held for c in todo),
            "removed": len(gone),
            "unchanged": len(ids) - len(todo),
        }
        if not todo and not gone:
            return counts
        docs, keys, key_chunk = chunk_keys(
            corpus, todo, embed_model, index_model, doc_vectors, cache, show_progress, self.key_dim, self.max_keys
        )
        rows = checked_rows(todo, docs, keys, key_chunk, self.dim, self.key_dim, self.max_keys)
        self._replace(gone + todo, todo, *rows, [hashes[c] for c in todo])
        return counts
