"""A corpus memory kept as a table in a real PostgreSQL + pgvector server (``PgMemory``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapterkit import AdapterEmbeddingModel, LinearLayer
from adapterkit.memory.corpus_memory import CorpusMemory, _text_hash
from adapterkit.memory.pg_memory import PgMemory, PgMemoryError, PgMemoryWriter, memory_names
from adapterkit.stores.postgres import LocalPostgres
from conftest import take


@pytest.fixture(scope="module")
def pg():
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def local(val_full, bge):
    """The same memory held locally: 12 Uber chunks, their sentences as keys."""
    return CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")


def _write(url, name, memory, batches=2, **options):
    """Write a local memory's arrays into a table, ``batches`` calls."""
    writer = PgMemoryWriter(url, name, memory.dim, **options)
    for part in np.array_split(np.arange(len(memory.chunk_ids)), batches):
        mine = np.isin(memory.owner, part)
        renumber = {int(c): i for i, c in enumerate(part)}
        writer.add([memory.chunk_ids[i] for i in part], memory.chunks[part], memory.keys[mine],
                   np.array([renumber[int(o)] for o in memory.owner[mine]]), [memory.chunk_hash[i] for i in part])
    return writer


def test_a_database_memory_pulls_as_the_local_one_does(pg, local, val_full, bge, tmp_path, monkeypatch):
    from adapterkit.memory import pg_memory

    monkeypatch.setattr(pg_memory, "COPY_ROWS", 5)  # several COPY statements per batch
    url = pg.url()
    db = _write(url, "uber_sentences", local).finish()
    assert len(db) == len(local.chunk_ids) and db.key_count() == len(local.keys)
    assert "uber_sentences" in memory_names(url)
    questions = list(take(val_full, 12).queries.values())[:20]
    q = torch.as_tensor(np.stack([bge.get_query_embedding(t) for t in questions]))
    assert torch.allclose(db.pull(q), local.pull(q), atol=1e-5)  # HNSW over a few hundred keys finds the exact top 32

    # served: the adapter then the memory, whichever holds it
    LinearLayer(384, 384).save(tmp_path / "adapter")
    with_db = AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=db)
    with_local = AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=local)
    assert np.allclose(with_db.get_query_embedding(questions[0]), with_local.get_query_embedding(questions[0]), atol=1e-5)


def test_the_database_memory_follows_the_index(pg, local, val_full, bge):
    url = pg.url()
    db = _write(url, "follows", local).finish()
    mirror = CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")
    corpus = dict(take(val_full, 12).corpus)
    first = next(iter(corpus))
    del corpus[first]
    corpus["new-chunk"] = "Gross bookings of the mobility segment rose in the fourth quarter of 2021 as trips recovered."
    assert db.update(corpus, bge) == mirror.update(corpus, bge) == {"added": 1, "changed": 0, "removed": 1, "unchanged": 11}
    assert db.chunk_hashes() == dict(zip(mirror.chunk_ids, mirror.chunk_hash))
    assert db.chunk_hashes()["new-chunk"] == _text_hash(corpus["new-chunk"])
    q = torch.as_tensor(np.asarray([bge.get_query_embedding("How did gross bookings of mobility change?")]))
    assert torch.allclose(db.pull(q), mirror.pull(q), atol=1e-5)
    assert db.update(corpus, bge) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 12}
    assert db.remove(["new-chunk", "not-held"]) == 1 and "new-chunk" not in db.chunk_hashes()


def test_an_unfinished_build_is_never_read_and_resumes(pg, local):
    url = pg.url()
    with pytest.raises(RuntimeError, match="died"):
        with _write(url, "resumed", local, batches=3):
            raise RuntimeError("the process died")  # the staging table holds every chunk; it was never finished
    with pytest.raises(PgMemoryError, match="No finished memory 'resumed'"):
        PgMemory(url, "resumed")

    # the server goes away mid-write: the batch in flight is rolled back, the rest is kept for resume
    writer = PgMemoryWriter(url, "cut_off", local.dim)
    half = len(local.chunk_ids) // 2
    writer.add(local.chunk_ids[:half], local.chunks[:half], local.keys[np.isin(local.owner, range(half))],
               local.owner[np.isin(local.owner, range(half))])
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend';")
    with pytest.raises(PgMemoryError, match="rolled back.*resume=True"):
        _write_rest(writer, local, half)
    with pytest.raises(PgMemoryError):
        PgMemory(url, "cut_off")
    again = PgMemoryWriter(url, "cut_off", local.dim, resume=True)
    assert again.written == set(local.chunk_ids[:half])
    assert _write_rest(again, local, 0) == len(local.keys[np.isin(local.owner, range(half, len(local.chunk_ids)))])
    done = again.finish()
    assert len(done) == len(local.chunk_ids) and done.key_count() == len(local.keys)


def _write_rest(writer, memory, start):
    """Add every chunk from ``start`` on; returns the rows written."""
    part = np.arange(start, len(memory.chunk_ids))
    mine = np.isin(memory.owner, part)
    return writer.add([memory.chunk_ids[i] for i in part], memory.chunks[part], memory.keys[mine], memory.owner[mine] - start)


def test_bad_names_options_and_vectors_are_errors(pg):
    with pytest.raises(ValueError, match="lower-case"):
        PgMemoryWriter(pg.url(), "Robert'); DROP TABLE x;--", 4)
    with pytest.raises(ValueError, match="Unknown PgMemory options"):
        PgMemoryWriter(pg.url(), "opts", 4, nprobe=3)
    writer = PgMemoryWriter(pg.url(), "bad_vectors", 4)
    with pytest.raises(ValueError, match="finite"):
        writer.add(["a"], np.array([[np.nan, 0, 0, 1]]), np.ones((1, 4)), np.array([0]))
    with pytest.raises(ValueError, match="more than once"):
        writer.add(["a", "a"], np.ones((2, 4)), np.ones((1, 4)), np.array([0]))


def test_an_ivfflat_memory_finds_the_exact_keys_when_it_probes_every_list(pg, local, val_full, bge):
    db = _write(pg.url(), "ivf_sentences", local, index="ivfflat", lists=4).finish()
    every = PgMemory(pg.url(), "ivf_sentences", probes=4)
    questions = list(take(val_full, 12).queries.values())[:10]
    q = torch.as_tensor(np.stack([bge.get_query_embedding(t) for t in questions]))
    assert db.get_config_dict()["index"] == "ivfflat" and db.probes == 2  # by default the square root of the lists
    assert torch.allclose(every.pull(q), local.pull(q), atol=1e-5)
