"""adapterkit: fine-tune a query adapter on top of any frozen, black-box embedding model.

Everything a user calls is importable from here (``from adapterkit import evaluate``). Names load on
first use, so ``import adapterkit`` stays light and the optional extras (notebooks, postgres, scale)
are needed only by the names that use them.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

__version__ = "0.2.0"

# name -> module that defines it; the layout by job is in the README's "Where things are".
_EXPORTS: Dict[str, str] = {}
for _module, _names in {
    "adapterkit.embeddings": ["OnnxBGEEmbedding", "resolve_embed_model", "model_identity"],
    "adapterkit.cache": ["EmbeddingCache", "EmbeddingCacheError", "NonFiniteEmbeddingError", "embed_once", "embed_texts"],
    "adapterkit.cluster": ["embed_on_cluster"],
    "adapterkit.adapters": ["AdapterLoadError", "BaseAdapter", "LinearLayer", "LowRankLinear", "OrthogonalLinear",
                            "TwoLayerNN", "load_adapter", "make_adapter"],
    "adapterkit.cross_model": ["CrossModelError", "SampleTooSmallError", "fit_linear_map"],
    "adapterkit.query_vectors": ["adapt_queries"],
    "adapterkit.adapter_embedding": ["AdapterEmbeddingModel", "LinearAdapterEmbeddingModel"],
    "adapterkit.data.files": ["get_file"],
    "adapterkit.data.datasets": ["DatasetError", "EmbeddingQAFinetuneDataset"],
    "adapterkit.data.documents": ["chunk_sentences", "corpus_to_nodes", "load_corpus"],
    "adapterkit.data.qa_sets": ["load_qa_datasets", "qa_datasets"],
    "adapterkit.data.splits": ["held_out", "split_corpus", "split_queries"],
    "adapterkit.data.folders": ["DocumentFolderError", "read_folder"],
    "adapterkit.data.questions": ["CallsDeclined", "generate_qa_embedding_pairs"],
    "adapterkit.data.llms": ["ask_before_paid_calls", "resolve_llm"],
    "adapterkit.memory.corpus_memory": ["CorpusMemory", "MemoryLoadError", "MemoryWriter"],
    "adapterkit.memory.pg_memory": ["PgMemory", "PgMemoryError", "PgMemoryWriter"],
    "adapterkit.memory.qdrant_memory": ["QdrantMemory", "QdrantMemoryError", "QdrantMemoryWriter"],
    "adapterkit.training.config": ["FinetuneConfig"],
    "adapterkit.training.engine": ["EmbeddingAdapterFinetuneEngine", "LLAMAINDEX_RECIPE"],
    "adapterkit.training.selection": ["TrainingDivergedError"],
    "adapterkit.training.losses": ["MultipleNegativesRankingLoss"],
    "adapterkit.evaluation.evaluate": ["display_results", "evaluate", "win_loss"],
    "adapterkit.evaluation.comparison": ["comparison_table"],
    "adapterkit.evaluation.recipes": ["engine_recipe", "nudge_recipe"],
    "adapterkit.evaluation.runner": ["compare_recipes", "compare_tasks"],
    "adapterkit.evaluation.nudge": ["nudge_documents"],
    "adapterkit.stores.counting": ["CountingEmbedding"],
    "adapterkit.stores.indexes": ["build_qdrant_index", "build_simple_index", "embed_nodes_once", "load_qdrant_index",
                                  "load_simple_index", "open_qdrant"],
    "adapterkit.stores.retrieval": ["evaluate_on_store", "metrics_by_index", "retrieval_results"],
    "adapterkit.stores.stored_vectors": ["cache_stored_vectors", "exact_top_k", "read_stored", "recall_at_k", "store_top_k"],
    "adapterkit.stores.training_sample": ["StoredSample", "sample_stored_corpus"],
    "adapterkit.stores.store_memory": ["memory_from_store"],
    "adapterkit.stores.postgres": ["LocalPostgres"],
    "adapterkit.pipeline.fit": ["FitResult", "OutputFolderError", "fit_documents"],
    "adapterkit.pipeline.evaluate_folder": ["evaluate_model_folder"],
    "adapterkit.pipeline.questions": ["write_questions"],
    "adapterkit.pipeline.sources": ["chunks_from_folder", "chunks_from_store", "open_store"],
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
