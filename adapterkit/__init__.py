"""adapterkit: fine-tune a query adapter on top of any frozen, black-box embedding model.

What the walkthrough, the guides and the notebooks call is importable from here (``from adapterkit
import evaluate``); everything else from the module that defines it (``adapterkit.memory.pg_memory``,
``adapterkit.stores.stored_vectors``, ...). Every error is an ``AdapterkitError``. Names load on first
use, so ``import adapterkit`` stays light and the optional extras (notebooks, postgres, scale) are
needed only by the names that use them.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

__version__ = "0.2.0"

# name -> module that defines it; the layout by job is in docs/development.md.
_EXPORTS: Dict[str, str] = {}
for _module, _names in {
    "adapterkit.errors": ["AdapterkitError"],
    "adapterkit.embeddings": ["OnnxBGEEmbedding", "resolve_embed_model"],
    "adapterkit.cache": ["EmbeddingCache", "embed_texts"],
    "adapterkit.cluster": ["embed_on_cluster"],
    "adapterkit.adapters": ["BaseAdapter", "LinearLayer", "TwoLayerNN", "load_adapter", "make_adapter"],
    "adapterkit.cross_model": ["fit_linear_map"],
    "adapterkit.adapter_embedding": ["AdapterEmbeddingModel", "LinearAdapterEmbeddingModel"],
    "adapterkit.data.datasets": ["EmbeddingQAFinetuneDataset"],
    "adapterkit.data.documents": ["load_corpus"],
    "adapterkit.data.qa_sets": ["load_qa_datasets", "qa_datasets"],
    "adapterkit.data.folders": ["read_folder"],
    "adapterkit.data.questions": ["generate_qa_embedding_pairs"],
    "adapterkit.data.llms": ["resolve_llm"],
    "adapterkit.memory.corpus_memory": ["CorpusMemory"],
    "adapterkit.memory.pg_memory": ["PgMemory"],
    "adapterkit.memory.qdrant_memory": ["QdrantMemory"],
    "adapterkit.training.config": ["FinetuneConfig"],
    "adapterkit.training.engine": ["EmbeddingAdapterFinetuneEngine", "LLAMAINDEX_RECIPE"],
    "adapterkit.evaluation.evaluate": ["display_results", "evaluate"],
    "adapterkit.evaluation.comparison": ["comparison_table"],
    "adapterkit.stores.postgres": ["LocalPostgres"],
    "adapterkit.stores.retrieval": ["evaluate_on_store"],
    "adapterkit.stores.stored_vectors": ["cache_stored_vectors"],
    "adapterkit.stores.store_memory": ["memory_from_store"],
    "adapterkit.stores.training_sample": ["sample_stored_corpus"],
    "adapterkit.pipeline.fit": ["fit_documents"],
    "adapterkit.pipeline.evaluate_folder": ["evaluate_model_folder"],
    "adapterkit.pipeline.sources": ["open_store"],
}.items():
    _EXPORTS.update(dict.fromkeys(_names, _module))

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adapterkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
