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

    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, float(i == 0)]} for i, t in enumerate(inputs)]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_spec_through_the_http_boundary(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = resolve_embed_model(
            "openai:text-embedding-3-small", api_key="sk-fake", api_base=f"http://127.0.0.1:{server.server_address[1]}/v1", max_retries=0
        )
        cache = EmbeddingCache(tmp_path)
        vecs = embed_texts(model, ["abc", "abcdef"], "text", cache=cache)
        assert vecs[:, 0].tolist() == [3.0, 6.0]
        assert FakeOpenAI.requests[-1]["model"] == "text-embedding-3-small"
        sent = len(FakeOpenAI.requests)
        embed_texts(model, ["abc", "abcdef"], "text", cache=cache)
        assert len(FakeOpenAI.requests) == sent  # served from the cache
        assert "sk-fake" not in model_identity(model)
    finally:
        server.shutdown()
