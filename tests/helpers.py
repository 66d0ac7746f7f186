"""Helpers shared by several test modules (fixtures live in conftest.py): a user-written adapter,
chunks with markers, and a local stand-in for OpenAI's chat endpoint (HTTP is the only thing faked)."""

from __future__ import annotations

import json
import re
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import torch
from torch import nn

from adapterkit.adapters import BaseAdapter


class Scale(BaseAdapter):
    """A user adapter with only forward and get_config_dict."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, embed):
        return embed * self.scale

    def get_config_dict(self):
        return {"dim": self.dim}


def marked_chunks(n: int) -> dict:
    """``{node_id: text}`` chunks long enough to ask about, each with a marker its questions echo."""
    return {f"node-{i}": f"CHUNK-{i} " + "Lyft reported revenue and rides for the year. " * 4 for i in range(n)}


class FakeOpenAIHandler(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: questions that echo the chunk's marker, in an untidy list."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        server: Any = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests += 1
            failing = server.requests <= server.fail_first
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            time.sleep(server.delay)
            if failing:
                return self._send(500, {"error": {"message": "overloaded", "type": "server_error"}})
            marker = re.search(r"CHUNK-\d+", body["messages"][-1]["content"]).group(0)
            text = (
                f"Here are two questions:\n1. What does {marker} say about revenue?\n2) **How many rides did {marker} count?**\nGood luck!"
            )
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                },
            )
        finally:
            with server.lock:
                server.in_flight -= 1

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def openai_llm(server) -> Any:
    from llama_index.llms.openai import OpenAI

    # max_retries=0: the client's own retries off, so a 500 reaches adapterkit's retry loop.
    return OpenAI(model="gpt-4o-mini", api_base=f"http://127.0.0.1:{server.server_port}/v1", api_key="fake", max_retries=0)


def marked_bge():
    """The offline model for the cluster test, built in each worker (``embed_on_cluster``'s model source)."""
    from adapterkit.embeddings import OnnxBGEEmbedding

    return MarkedModel(OnnxBGEEmbedding(num_threads=1))


def _marked_model_class():
    import os
    from pathlib import Path
    from typing import List

    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr

    from adapterkit.cache import call_model
    from adapterkit.embeddings import model_identity

    class MarkedModel(BaseEmbedding):
        """A real model whose batches leave a trace: each logs its first text in a file of its process
        ($ADAPTERKIT_TEST_TASK_LOG); a batch holding "SLOW" waits the first time (its worker is to be
        killed mid-batch); one holding "FAIL" raises. Its vectors are the inner model's, cached as such."""

        _inner: Any = PrivateAttr()

        def __init__(self, inner: BaseEmbedding, **kwargs: Any) -> None:
            super().__init__(model_name=inner.model_name, **kwargs)
            self._inner = inner

        @property
        def cache_identity(self) -> str:
            return model_identity(self._inner)

        def _batch(self, texts: List[str]) -> List[List[float]]:
            folder = Path(os.environ["ADAPTERKIT_TEST_TASK_LOG"])
            with open(folder / f"{os.getpid()}.log", "a") as fh:
                fh.write(f"{texts[0]}\t{any('SLOW' in t for t in texts)}\n")
            if any("FAIL" in t for t in texts):
                raise ValueError("this batch fails")
            if any("SLOW" in t for t in texts) and not (folder / "slow.pid").exists():
                (folder / "slow.pid").write_text(str(os.getpid()))
                time.sleep(120)
            return call_model(self._inner, texts, "query")

        def _get_query_embeddings(self, queries: List[str]) -> List[List[float]]:
            return self._batch(queries)

        def _get_query_embedding(self, query: str) -> List[float]:
            return self._batch([query])[0]

        def _get_text_embedding(self, text: str) -> List[float]:
            raise NotImplementedError

        async def _aget_query_embedding(self, query: str) -> List[float]:
            return self._get_query_embedding(query)

    return MarkedModel


MarkedModel = _marked_model_class()
