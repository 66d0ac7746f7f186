"""Small tables that show nodes and question sets in the notebooks."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import pandas as pd
from llama_index.core.schema import BaseNode, MetadataMode

from adapterkit.adapters import infer_adapter_cls
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset


def nodes_frame(nodes: Sequence[BaseNode], n: int = 3, width: int = 160) -> pd.DataFrame:
    """The first ``n`` nodes as a table: id, file, page, characters, start of the text."""
    rows = []
    for node in list(nodes)[:n]:
        text = " ".join(node.get_content(metadata_mode=MetadataMode.NONE).split())
        rows.append(
            {
                "node_id": node.node_id,
                "file": node.metadata.get("file_name", ""),
                "page": node.metadata.get("page_label", ""),
                "chars": len(text),
                "text": text[:width] + ("…" if len(text) > width else ""),
            }
        )
    return pd.DataFrame(rows)


def dataset_counts(datasets: Dict[str, EmbeddingQAFinetuneDataset]) -> pd.DataFrame:
    """One row per dataset: queries, chunks, queries per chunk, mean chunk and query length."""
    rows = []
    for name, ds in datasets.items():
        rows.append(
            {
                "dataset": name,
                "queries": len(ds.queries),
                "chunks": len(ds.corpus),
                "queries_per_chunk": round(len(ds.queries) / max(1, len(ds.corpus)), 2),
                "mean_chunk_chars": round(sum(map(len, ds.corpus.values())) / max(1, len(ds.corpus)), 1),
                "mean_query_chars": round(sum(map(len, ds.queries.values())) / max(1, len(ds.queries)), 1),
            }
        )
    return pd.DataFrame(rows)


def qa_examples(dataset: EmbeddingQAFinetuneDataset, n: int = 3, width: int = 200) -> pd.DataFrame:
    """The first ``n`` (question, relevant chunk) pairs, the chunk cut to ``width`` characters."""
    rows = []
    for qid in list(dataset.queries)[:n]:
        chunk = " ".join(dataset.corpus[dataset.relevant_docs[qid][0]].split())
        rows.append(
            {
                "question": dataset.queries[qid],
                "relevant chunk (start)": chunk[:width] + ("…" if len(chunk) > width else ""),
            }
        )
    return pd.DataFrame(rows)


def llamaindex_loads(base_model: Any, folder: Any) -> str:
    """The adapter class LlamaIndex's own ``AdapterEmbeddingModel`` loads from ``folder``, or why it cannot.

    LlamaIndex defaults to its ``LinearLayer``; for a two-layer adapter it must be told ``TwoLayerNN``,
    and it has no class for adapterkit's other kinds.
    """
    from llama_index.embeddings.adapter import AdapterEmbeddingModel as LlamaIndexAdapterEmbeddingModel
    from llama_index.embeddings.adapter.utils import LinearLayer, TwoLayerNN

    kind = infer_adapter_cls(folder).__name__
    theirs = {"LinearLayer": LinearLayer, "TwoLayerNN": TwoLayerNN}.get(kind)
    if theirs is None:
        return f"none: LlamaIndex has no class for a {kind} adapter (adapterkit's AdapterEmbeddingModel loads it)"
    return type(LlamaIndexAdapterEmbeddingModel(base_model, str(folder), adapter_cls=theirs, device="cpu")._adapter).__name__
