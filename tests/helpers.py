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
            text = f"Here are two questions:\n1. What does {marker} say about revenue?\n2) **How many rides did {marker} count?**\nGood luck!"
            self._send(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })
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
