"""A corpus memory kept as a collection in Qdrant (``QdrantMemory``), through the real client (a local folder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cross_model import FirstCoordinates
from test_memory_in_database import _write

from adapterkit import AdapterEmbeddingModel, LinearLayer
from adapterkit.embeddings import model_identity
from adapterkit.memory.corpus_memory import CorpusMemory, _text_hash
from adapterkit.memory.qdrant_memory import QdrantMemory, QdrantMemoryError, QdrantMemoryWriter
from conftest import take


@pytest.fixture(scope="module")
def local(val_full, bge):
    return CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")


@pytest.fixture
def client(tmp_path):
    from adapterkit.stores.indexes import open_qdrant

    opened = open_qdrant(tmp_path / "qdrant")
    yield opened
    opened.close()


def _questions(val_full, bge, n=20):
    texts = list(take(val_full, 12).queries.values())[:n]
    return texts, torch.as_tensor(np.stack([bge.get_query_embedding(t) for t in texts]))


def test_a_qdrant_memory_pulls_as_the_local_one_does_and_serves(client, local, val_full, bge, tmp_path):
    memory = _write(client, "uber_sentences", local, batches=3, writer=QdrantMemoryWriter).finish()
    assert len(memory) == len(local.chunk_ids) and memory.key_count() == len(local.keys)
    texts, q = _questions(val_full, bge)
    assert torch.allclose(memory.pull(q), local.pull(q), atol=1e-5)
    LinearLayer(384, 384).save(tmp_path / "adapter")
    served = AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=[memory])
    assert np.allclose(
        served.get_query_embedding(texts[0]),
        AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=local).get_query_embedding(texts[0]),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="384-dimensional base query vectors"):
        memory.lookup(np.ones((1, 8), np.float32))


def test_the_qdrant_memory_follows_the_index(client, local, val_full, bge):
    who = model_identity(bge)
    memory = _write(client, "follows", local, writer=QdrantMemoryWriter, key_model=who, chunk_model=who).finish()
    mirror = CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")
    corpus = dict(take(val_full, 12).corpus)
    del corpus[next(iter(corpus))]
    corpus["new-chunk"] = "Gross bookings of the mobility segment rose in the fourth quarter of 2021 as trips recovered."
    assert memory.update(corpus, bge) == mirror.update(corpus, bge) == {"added": 1, "changed": 0, "removed": 1, "unchanged": 11}
    assert memory.chunk_hashes() == dict(zip(mirror.chunk_ids, mirror.chunk_hash))
    assert memory.chunk_hashes()["new-chunk"] == _text_hash(corpus["new-chunk"]) and memory.key_count() == len(mirror.keys)
    q = torch.as_tensor(np.asarray([bge.get_query_embedding("How did gross bookings of mobility change?")]))
    assert torch.allclose(memory.pull(q), mirror.pull(q), atol=1e-5)
    assert memory.update(corpus, bge) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 12}
    assert memory.remove(["new-chunk", "not-held"]) == 1 and "new-chunk" not in memory.chunk_hashes()
    with pytest.raises(ValueError, match="pass the model they came from"):
        memory.update(corpus, FirstCoordinates(bge))


def _part(memory, chunks):
    """The arguments of ``add`` for the chunks at ``chunks`` (positions) of a local memory."""
    mine = np.isin(memory.owner, chunks)
    renumber = {int(c): i for i, c in enumerate(chunks)}
    return (
        [memory.chunk_ids[i] for i in chunks],
        memory.chunks[chunks],
        memory.keys[mine],
        np.array([renumber[int(o)] for o in memory.owner[mine]]),
        [memory.chunk_hash[i] for i in chunks],
    )


def test_an_unfinished_qdrant_build_is_never_read_resumes_and_replaces_the_old_one(client, local):
    half = len(local.chunk_ids) // 2
    first_half, second_half = list(range(half)), list(range(half, len(local.chunk_ids)))
    with pytest.raises(RuntimeError, match="died"):
        with QdrantMemoryWriter(client, "resumed", local.dim) as writer:
            writer.add(*_part(local, first_half))
            raise RuntimeError("the process died")
    with pytest.raises(QdrantMemoryError, match="No finished memory 'resumed'"):
        QdrantMemory(client, "resumed")
    with pytest.raises(QdrantMemoryError, match=r"other \['weight'\]"):  # a resumed build keeps its options
        QdrantMemoryWriter(client, "resumed", local.dim, resume=True, weight=0.5)
    again = QdrantMemoryWriter(client, "resumed", local.dim, resume=True)
    assert again.add(*_part(local, first_half)) == 0  # written before the crash: skipped
    assert again.add(*_part(local, second_half)) == np.isin(local.owner, second_half).sum() + len(second_half)  # keys and markers
    first = again.finish()
    assert len(first) == len(local.chunk_ids) and first.key_count() == len(local.keys)
    builds = {c.name for c in client.get_collections().collections}

    _write(client, "resumed", local, batches=1, writer=QdrantMemoryWriter, weight=0.5).finish()  # a new build replaces it
    assert QdrantMemory(client, "resumed").weight == 0.5
    now = {c.name for c in client.get_collections().collections}
    assert len(now) == len(builds) and now != builds  # the older build's collection was dropped

    from qdrant_client import models

    client.create_collection("users_table", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.update_collection_aliases(
        change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="users_table", alias_name="users_alias"))
        ]
    )
    for name in ("users_table", "users_alias"):  # the user's collection, and an alias of it: never touched
        with pytest.raises(QdrantMemoryError, match="not the adapterkit memory"):
            QdrantMemoryWriter(client, name, 4)
        with pytest.raises(QdrantMemoryError, match="not the adapterkit memory"):
            QdrantMemory(client, name)
    assert client.collection_exists("users_table") and client.collection_exists("users_alias")
    with pytest.raises(ValueError, match="max_keys=1"):
        _write(client, "capped", local, writer=QdrantMemoryWriter, max_keys=1)


def test_keyless_chunks_and_rewrites_with_fewer_keys_leave_nothing_behind(client, bge):
    memory = QdrantMemoryWriter(client, "small", 384).finish()
    long = (
        "Revenue grew in the fourth quarter of the year. Costs fell sharply across every segment we run. Margins rose for the first time."
    )
    corpus = {"a": long, "short": "Too short."}
    assert memory.update(corpus, bge) == {"added": 2, "changed": 0, "removed": 0, "unchanged": 0}
    assert len(memory) == 2 and memory.key_count() == 3  # "short" is held with no key
    corpus["a"] = "Revenue grew in the fourth quarter of the year."
    assert memory.update(corpus, bge)["changed"] == 1 and memory.key_count() == 1  # the two old keys are gone
    assert memory.remove(["short", "short"]) == 1 and len(memory) == 1


def test_a_memory_of_a_qdrant_store_is_built_in_the_same_qdrant(val_full, bge, tmp_path):
    from adapterkit.data.documents import corpus_to_nodes
    from adapterkit.stores.indexes import build_qdrant_index, load_qdrant_index, open_qdrant
    from adapterkit.stores.store_memory import memory_from_store

    corpus = take(val_full, 12).corpus
    build_qdrant_index(corpus_to_nodes(corpus), bge, tmp_path / "index", collection="uber")  # the user's index
    client = open_qdrant(tmp_path / "index")
    try:
        store = load_qdrant_index(client, bge, collection="uber").vector_store
        with QdrantMemoryWriter(client, "uber_memory", 384, max_keys=2) as writer:
            counts = memory_from_store(store, bge, writer, max_keys=2, batch_size=5)
        expected = CorpusMemory.from_corpus(corpus, bge, index="exact", max_keys=2)
        memory = QdrantMemory(client, "uber_memory")
        assert counts == {"chunks": 12, "keys": len(expected.keys)} and memory.key_count() == len(expected.keys)
        _, q = _questions(val_full, bge)
        assert torch.allclose(memory.pull(q), expected.pull(q), atol=1e-5)
    finally:
        client.close()
