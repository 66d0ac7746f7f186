"""The suite never reaches the network, and nothing calls a paid API unless a parameter names it."""

from __future__ import annotations

import socket

import pytest
from llama_index.core.embeddings import MockEmbedding

from adapterkit.data import files
from adapterkit.notebook import tables


def test_a_connection_to_another_host_fails_in_tests():
    with socket.socket() as s, pytest.raises(OSError, match="never touch the network"):
        s.connect(("93.184.216.34", 80))


def test_data_files_come_from_the_mirror_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(files, "_download", lambda *a, **k: pytest.fail("a download was attempted offline"))
    path = files.get_file("val_dataset.json")
    assert path.parent == tmp_path and files.sha256_of(path) == files.FILES["val_dataset.json"].sha256


def test_an_api_key_alone_never_starts_paid_calls(val_small, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-would-be-billed")
    monkeypatch.setattr(tables, "evaluate", lambda *a, **k: pytest.fail("a model was called without being asked"))
    assert tables.reference_rows(val_small, top_k=5, data_source="published") == [
        {**tables.PUBLISHED_ADA002, "source": tables.PUBLISHED_NOTE}
    ]


def test_the_reference_row_is_measured_only_with_the_model_it_names(val_small):
    rows = tables.reference_rows(val_small, top_k=5, measure_with=MockEmbedding(embed_dim=8))
    assert len(rows) == 1 and rows[0]["source"] == "measured" and 0 <= rows[0]["hit_rate"] <= 1
