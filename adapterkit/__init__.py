"""adapterkit: fine-tune a query adapter on top of any frozen, black-box embedding model."""

from adapterkit.adapter_embedding import AdapterEmbeddingModel, LinearAdapterEmbeddingModel
from adapterkit.adapters import BaseAdapter, LinearLayer, LowRankLinear, OrthogonalLinear, TwoLayerNN, load_adapter
from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.config import FinetuneConfig
from adapterkit.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.embeddings import OnnxBGEEmbedding, resolve_embed_model
from adapterkit.eval_utils import display_results, evaluate
from adapterkit.llms import resolve_llm
from adapterkit.losses import MultipleNegativesRankingLoss
from adapterkit.memory import CorpusMemory
from adapterkit.questions import generate_qa_embedding_pairs
from adapterkit.trainer import LLAMAINDEX_RECIPE, EmbeddingAdapterFinetuneEngine

__all__ = [
    "AdapterEmbeddingModel",
    "BaseAdapter",
    "DatasetError",
    "EmbeddingAdapterFinetuneEngine",
    "EmbeddingCache",
    "EmbeddingQAFinetuneDataset",
    "FinetuneConfig",
    "LLAMAINDEX_RECIPE",
    "LinearAdapterEmbeddingModel",
    "LinearLayer",
    "CorpusMemory",
    "LowRankLinear",
    "MultipleNegativesRankingLoss",
    "OrthogonalLinear",
    "OnnxBGEEmbedding",
    "TwoLayerNN",
    "display_results",
    "embed_texts",
    "evaluate",
    "generate_qa_embedding_pairs",
    "load_adapter",
    "resolve_llm",
    "resolve_embed_model",
]
