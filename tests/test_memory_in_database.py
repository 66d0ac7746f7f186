"""A corpus memory kept as a table in a real PostgreSQL + pgvector server (``PgMemory``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cross_model import FirstCoordinates

from adapterkit import AdapterEmbeddingModel, LinearLayer
from adapterkit.memory.corpus_memory import CorpusMemory, _text_hash
from adapterkit.memory.pg_memory import PgMemory, PgMemoryError, PgMemoryWriter, memory_names
from conftest import take


@pytest.fixture(scope="module")
def local(val_full, bge):
    """The same memory held locally: 12 Uber chunks, their sentences as keys."""
    return CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")


def _same_pull(a, b):
    """Pulls equal but for half precision, which keeps 11 bits of each value."""
    return torch.allclose(a, b, atol=1e-3 * float(b.abs().max()))


def _write(url, name, memory, batches=2, writer=PgMemoryWriter, **options):
    """Write a local memory's arrays through ``writer`` (a table, or a Qdrant collection: ``url`` is then the client), ``batches`` calls."""
    writer = writer(url, name, memory.dim, **options)
    for part in np.array_split(np.arange(len(memory.chunk_ids)), batches):
        mine = np.isin(memory.owner, part)
        renumber = {int(c): i for i, c in enumerate(part)}
        writer.add(
            [memory.chunk_ids[i] for i in part],
            memory.chunks[part],
            memory.keys[mine],
            np.array([renumber[int(o)] for o in memory.owner[mine]]),
            [memory.chunk_hash[i] for i in part],
        )
    return writer


@pytest.mark.parametrize("half", [False, True])
def test_a_database_memory_pulls_as_the_local_one_does(pg, local, val_full, bge, tmp_path, monkeypatch, half):
    from adapterkit.memory import pg_rows

    monkeypatch.setattr(pg_rows, "COPY_ROWS", 5)  # several COPY statements per batch
    url = pg.url()
    db = _write(url, "uber_sentences", local, half=half).finish()
    assert len(db) == len(local.chunk_ids) and db.key_count() == len(local.keys) and db.half is half
    assert "uber_sentences" in memory_names(url)
    held = (
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'uber_sentences__keys'::regclass AND attname = 'key';"
    )
    assert ("halfvec(384)" in pg.psql(held)) is half  # each vector is held once, in half precision when asked
    questions = list(take(val_full, 12).queries.values())[:20]
    q = torch.as_tensor(np.stack([bge.get_query_embedding(t) for t in questions]))
    # HNSW over a few hundred keys finds the exact top 32; half precision keeps 11 bits of each value
    tolerance = 1e-3 * float(local.pull(q).abs().max()) if half else 1e-5
    assert torch.allclose(db.pull(q), local.pull(q), atol=tolerance)

    # served: the adapter then the memory, whichever holds it
    LinearLayer(384, 384).save(tmp_path / "adapter")
    with_db = AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=db)
    with_local = AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=local)
    assert np.allclose(with_db.get_query_embedding(questions[0]), with_local.get_query_embedding(questions[0]), atol=tolerance)


def test_the_database_memory_follows_the_index(pg, local, val_full, bge):
    from adapterkit.embeddings import model_identity

    url = pg.url()
    db = _write(url, "follows", local, key_model=model_identity(bge), chunk_model=model_identity(bge)).finish()
    mirror = CorpusMemory.from_corpus(take(val_full, 12).corpus, bge, index="exact")
    corpus = dict(take(val_full, 12).corpus)
    first = next(iter(corpus))
    del corpus[first]
    corpus["new-chunk"] = "Gross bookings of the mobility segment rose in the fourth quarter of 2021 as trips recovered."
    assert db.update(corpus, bge) == mirror.update(corpus, bge) == {"added": 1, "changed": 0, "removed": 1, "unchanged": 11}
    assert db.chunk_hashes() == dict(zip(mirror.chunk_ids, mirror.chunk_hash))
    assert db.chunk_hashes()["new-chunk"] == _text_hash(corpus["new-chunk"])
    q = torch.as_tensor(np.asarray([bge.get_query_embedding("How did gross bookings of mobility change?")]))
    assert _same_pull(db.pull(q), mirror.pull(q))
    assert db.update(corpus, bge) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 12}
    assert db.key_count() == len(mirror.keys) and len(db) == len(mirror.chunk_ids)
    new_keys = int((mirror.owner == mirror.chunk_ids.index("new-chunk")).sum())
    assert db.remove(["new-chunk", "not-held"]) == 1 and "new-chunk" not in db.chunk_hashes()
    assert db.key_count() == len(mirror.keys) - new_keys > 0  # its keys went with it
    columns = "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{}'::regclass AND attnum > 0;"
    assert "chunk_id,key" in pg.psql(columns.format("follows__keys"))  # a key row names its chunk, never copies its vector
    assert "chunk_id,chunk_hash,chunk" in pg.psql(columns.format("follows"))
    with pytest.raises(ValueError, match="pass the model they came from"):  # vectors of another model never mix in
        db.update(corpus, FirstCoordinates(bge))


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
    writer.add(
        local.chunk_ids[:half],
        local.chunks[:half],
        local.keys[np.isin(local.owner, range(half))],
        local.owner[np.isin(local.owner, range(half))],
    )
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend';")
    with pytest.raises(PgMemoryError, match="rolled back.*resume=True"):
        _write_rest(writer, local, half)
    with pytest.raises(PgMemoryError):
        PgMemory(url, "cut_off")
    again = PgMemoryWriter(url, "cut_off", local.dim, resume=True)
    # everything offered again: only the chunks the first writer had not written are
    assert _write_rest(again, local, 0) == len(local.keys[np.isin(local.owner, range(half, len(local.chunk_ids)))])
    assert _write_rest(again, local, 0) == 0  # a chunk offered twice is held once
    done = again.finish()
    assert len(done) == len(local.chunk_ids) and done.key_count() == len(local.keys)
    assert again.finish().key_count() == len(local.keys)  # finishing twice (with-block and call) is harmless
    with pytest.raises(RuntimeError, match="died"):
        with _write(url, "other_dim", local):
            raise RuntimeError("died")
    with pytest.raises(PgMemoryError, match="resume=False"):  # resuming it with another dimension
        PgMemoryWriter(url, "other_dim", 8, resume=True)
    with pytest.raises(PgMemoryError, match=r"other \['max_keys', 'weight'\]"):  # or other options: its rows would mix two kinds
        PgMemoryWriter(url, "other_dim", local.dim, resume=True, weight=0.5, max_keys=3)


def _write_rest(writer, memory, start):
    """Add every chunk from ``start`` on; returns the rows written."""
    part = np.arange(start, len(memory.chunk_ids))
    mine = np.isin(memory.owner, part)
    return writer.add([memory.chunk_ids[i] for i in part], memory.chunks[part], memory.keys[mine], memory.owner[mine] - start)


def test_bad_names_options_and_vectors_are_errors(pg):
    for name in ("Robert'); DROP TABLE x;--", "memory\n"):
        with pytest.raises(ValueError, match="lower-case"):
            PgMemoryWriter(pg.url(), name, 4)
    with pytest.raises(ValueError, match="Unknown PgMemory options"):
        PgMemoryWriter(pg.url(), "opts", 4, nprobe=3)
    with pytest.raises(ValueError, match="top_k >= 1"):
        PgMemoryWriter(pg.url(), "opts", 4, top_k=0)
    with pytest.raises(ValueError, match="index='ivfflat'"):
        PgMemoryWriter(pg.url(), "opts", 4, lists=10)
    pg.psql("CREATE TABLE users_own_table (x int); INSERT INTO users_own_table VALUES (1);")
    with pytest.raises(PgMemoryError, match="not an adapterkit memory"):  # never replaced by a memory
        PgMemoryWriter(pg.url(), "users_own_table", 4)
    assert "1 row" in pg.psql("SELECT count(*) FROM users_own_table;")
    pg.psql("CREATE TABLE mine__keys (x int);")
    with pytest.raises(PgMemoryError, match="not an adapterkit memory"):  # nor a table named as a memory's keys
        PgMemoryWriter(pg.url(), "mine", 4)
    # a reserved word is a name like any other; a chunk without keys is held and never found
    with PgMemoryWriter(pg.url(), "order", 4, index="ivfflat") as writer:
        writer.add(["a", "b"], np.eye(2, 4), np.eye(1, 4), np.array([0]), ["h1", "h2"])
    memory = PgMemory(pg.url(), "order")
    assert memory.chunk_hashes() == {"a": "h1", "b": "h2"} and memory.key_count() == 1
    sims, ids, _ = memory.lookup(np.eye(2, 4)[1:])
    assert ids == [["a"]] and sims[0, 1] == -np.inf
    with pytest.raises(ValueError, match="4-dimensional"):
        memory.lookup(np.ones((1, 8)))
    with pytest.raises(ValueError, match="probes for IVFFlat"):
        PgMemory(pg.url(), "order", ef_search=50)
    pg.psql("""UPDATE adapterkit_memories SET config = replace(config, '"layout": 2, ', '') WHERE name = 'order';""")
    with pytest.raises(PgMemoryError, match="earlier adapterkit.*build it again"):  # one table, each chunk copied per key
        PgMemory(pg.url(), "order")
    with pytest.raises(ValueError, match="never two _ in a row"):  # the memory's own tables are order, order__keys
        PgMemoryWriter(pg.url(), "order__keys", 4)
    with pytest.raises(ValueError, match="recall is the target"):
        PgMemoryWriter(pg.url(), "opts", 4, recall=0.9)  # an HNSW index has no probes to choose
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
    config = db.get_config_dict()
    assert config["index"] == "ivfflat" and config["lists"] == 4 and 2 <= db.probes <= 4  # from the square root of the lists up
    assert config["measured_recall"] >= 0.95 or db.probes == 4  # chosen for the recall target
    assert _same_pull(every.pull(q), local.pull(q))


def test_a_lookup_outlives_a_dropped_connection_and_a_changed_table_is_named(pg, local):
    url = pg.url()
    _write(url, "faults", local).finish()
    memory = PgMemory(url, "faults")
    q = local.keys[:5]
    before = memory.lookup(q)
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend';")
    after = memory.lookup(q)  # a read is repeated once on a new connection
    assert after[1] == before[1] and np.array_equal(after[0], before[0]) and np.array_equal(after[2], before[2])
    pg.psql('ALTER TABLE "faults" DROP COLUMN chunk;')
    with pytest.raises(PgMemoryError, match="changed, dropped or rebuilt.*build the memory again"):
        memory.lookup(q)
    pg.psql('DROP TABLE "faults";')
    with pytest.raises(PgMemoryError, match="changed, dropped or rebuilt"):
        memory.lookup(q)


def test_a_capped_memory_refuses_more_keys_and_its_updates_keep_the_cap(pg, local, val_full, bge):
    url = pg.url()
    with pytest.raises(ValueError, match="max_keys=1"):
        _write(url, "capped", local, max_keys=1)  # the local memory holds several sentences per chunk
    corpus = take(val_full, 4).corpus
    capped = CorpusMemory.from_corpus(corpus, bge, index="exact", max_keys=2)
    _write(url, "capped", capped, max_keys=2).finish()
    memory = PgMemory(url, "capped")
    assert memory.max_keys == 2 and memory.get_config_dict()["max_keys"] == 2
    text = " ".join(f"Revenue line {i} of the mobility segment grew in the fourth quarter." for i in range(6))
    counts = memory.update(dict(corpus, extra=text), bge)
    capped.update(dict(corpus, extra=text), bge)
    assert counts["added"] == 1 and memory.key_count() == len(capped.keys)
