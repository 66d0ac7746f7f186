"""Attacks on the database memory (``PgMemoryWriter``, ``PgMemory``) against a real PostgreSQL + pgvector server.

Names that meet the memory's own tables and indexes, vectors half precision cannot hold, writes cut off
mid-COPY, two writers on one name, readers open across a rebuild, and a tampered ``adapterkit_memories``
record. Each test asserts what the memory must do; synthetic vectors only (no model is loaded).
"""

from __future__ import annotations

import json
from typing import List, Optional

import numpy as np
import psycopg2
import pytest
from psycopg2 import sql

from adapterkit.memory import pg_rows
from adapterkit.memory.pg_memory import PgMemory, PgMemoryError, PgMemoryWriter, memory_names

DIM = 4


def run(db, statement: str, params: tuple = ()) -> List[tuple]:
    with db.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def exists(db, name: str) -> bool:
    return run(db, "SELECT to_regclass(%s)", (sql.Identifier(name).as_string(db),))[0][0] is not None


def rows_of(db, name: str) -> Optional[List[tuple]]:
    if not exists(db, name):
        return None
    return run(db, sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(name)).as_string(db))


def index_table(db, index: str) -> Optional[str]:
    """The table an index named ``index`` is on (None: no such index)."""
    found = run(db, "SELECT tablename FROM pg_indexes WHERE schemaname = 'public' AND indexname = %s", (index,))
    return found[0][0] if found else None


def orphan_keys(db, name: str) -> int:
    """Key rows naming a chunk the memory does not hold."""
    statement = sql.SQL("SELECT count(*) FROM {} k WHERE NOT EXISTS (SELECT 1 FROM {} c WHERE c.chunk_id = k.chunk_id)")
    return run(db, statement.format(sql.Identifier(name + "__keys"), sql.Identifier(name)).as_string(db))[0][0]


def build(url: str, name: str, ids=("a", "b", "c"), dim: int = DIM, **options) -> PgMemory:
    """A finished memory: chunk i and its one key both point along axis i (mod dim)."""
    vectors = np.eye(dim, dtype=np.float32)[[i % dim for i in range(len(ids))]]
    writer = PgMemoryWriter(url, name, dim, **options)
    writer.add(list(ids), vectors, vectors, np.arange(len(ids)), [f"h-{c}" for c in ids])
    return writer.finish()


def kill(db, conn) -> None:
    """The server ends the backend of ``conn`` (as when it restarts), not the test's own connection."""
    run(db, "SELECT pg_terminate_backend(%s)", (conn.get_backend_pid(),))


# ---------------------------------------------------------------------------------------------------------------- names


def test_a_users_table_named_like_a_staging_table_is_never_dropped(pg, db):
    """``name__building`` and ``name__building__keys`` are a writer's staging tables; a user's own tables of those names
    are not a memory's: a writer must refuse the name (or stage elsewhere), never drop them."""
    pg.psql("CREATE TABLE own__building (x int); INSERT INTO own__building VALUES (7);")
    pg.psql("CREATE TABLE own2__building__keys (x int); INSERT INTO own2__building__keys VALUES (8);")
    for name in ("own", "own2"):
        try:
            build(pg.url(), name)
        except PgMemoryError:
            pass  # refused: fine
    assert rows_of(db, "own__building") == [(7,)]
    assert rows_of(db, "own2__building__keys") == [(8,)]


def test_a_users_index_named_like_a_staging_index_is_never_taken(pg, db):
    """``CREATE INDEX IF NOT EXISTS name__building__kc`` skips when a user's index holds that name, and ``finish`` then
    renames the user's index to ``name__kc``: it must stay the user's, under its own name."""
    pg.psql("CREATE TABLE own_kc (x int); CREATE INDEX clash__building__kc ON own_kc (x);")
    try:
        build(pg.url(), "clash")
    except PgMemoryError:
        pass  # refused: fine
    assert index_table(db, "clash__building__kc") == "own_kc"
    assert index_table(db, "clash__kc") != "own_kc"


def test_a_users_index_named_like_a_memory_index_is_a_clear_error(pg, db):
    """A user's index ``clash_ann__ann``: the rename in ``finish`` fails; that is a PgMemoryError, not a raw psycopg2 error."""
    pg.psql("CREATE TABLE own_ann (x int); CREATE INDEX clash_ann__ann ON own_ann (x);")
    with pytest.raises(PgMemoryError):
        build(pg.url(), "clash_ann")
    assert index_table(db, "clash_ann__ann") == "own_ann"


def test_rebuilding_a_memory_never_drops_an_older_memory_named_as_its_keys_table(pg, db):
    """Layout 1 (the previous adapterkit) allowed ``__`` in a name: ``x`` and ``x__keys`` could both be memories, one table
    each. Rebuilding ``x`` in layout 2 drops ``x__keys`` as if it were ``x``'s keys: it is another memory."""
    old = '{"layout": 1, "dim": 4, "key_dim": 4, "index": "hnsw", "weight": 0.25, "temperature": 100.0, "top_k": 32}'
    for name in ("legacy", "legacy__keys"):
        run(
            db,
            sql.SQL(
                "CREATE TABLE {} (row_id bigserial PRIMARY KEY, chunk_id text NOT NULL, chunk_hash text NOT NULL, "
                "chunk vector(4) NOT NULL, key vector(4) NOT NULL)"
            )
            .format(sql.Identifier(name))
            .as_string(db),
        )
        run(
            db,
            sql.SQL("INSERT INTO {} (chunk_id, chunk_hash, chunk, key) VALUES ('old', 'h', '[1,0,0,0]', '[1,0,0,0]')")
            .format(sql.Identifier(name))
            .as_string(db),
        )
    pg.psql("CREATE TABLE IF NOT EXISTS adapterkit_memories (name text PRIMARY KEY, config text NOT NULL, ready boolean NOT NULL);")
    run(db, "INSERT INTO adapterkit_memories VALUES ('legacy', %s, true), ('legacy__keys', %s, true)", (old, old))
    try:
        build(pg.url(), "legacy")
    except PgMemoryError:
        pass  # refused: fine
    assert exists(db, "legacy__keys") and run(db, 'SELECT chunk_id FROM "legacy__keys"') == [("old",)]


def test_a_memory_cannot_be_named_as_the_metadata_table(pg, db):
    """``adapterkit_memories`` records the memories: it is refused as a memory name at once, before any staging table."""
    pg.psql("CREATE DATABASE fresh_meta;")
    url = pg.url(database="fresh_meta")
    fresh = psycopg2.connect(host=pg.socket_dir, user="postgres", dbname="fresh_meta")
    fresh.autocommit = True
    try:
        run(fresh, "CREATE EXTENSION vector")
        with pytest.raises(ValueError, match="adapterkit_memories"):
            PgMemoryWriter(url, "adapterkit_memories", DIM)
        assert not exists(fresh, "adapterkit_memories__building")
    finally:
        fresh.close()


def test_a_database_without_pgvector_is_a_clear_error(pg):
    pg.psql("CREATE DATABASE no_vector;")
    with pytest.raises(PgMemoryError, match="vector"):
        PgMemoryWriter(pg.url(database="no_vector"), "m", DIM)


def test_names_ending_like_the_suffixes_are_memories_of_their_own(pg, db):
    """``k``, ``k_``, ``k_keys`` and ``k_building`` never share a table or an index."""
    url = pg.url()
    names = {"k": ("a",), "k_": ("b", "c"), "k_keys": ("d", "e", "f"), "k_building": ("g",)}
    for name, ids in names.items():
        build(url, name, ids, index="ivfflat" if name == "k_" else "hnsw")
    for name, ids in names.items():
        memory = PgMemory(url, name)
        assert sorted(memory.chunk_hashes()) == list(ids) and memory.key_count() == len(ids) and orphan_keys(db, name) == 0
        memory.close()
    assert set(names) <= set(memory_names(url))


def test_the_longest_name_keeps_every_table_and_index_name_whole(pg, db):
    url = pg.url()
    name = "n" * 40
    with pytest.raises(ValueError, match="1-40"):
        PgMemoryWriter(url, name + "n", DIM)
    memory = build(url, name, index="ivfflat")
    assert len(memory) == 3 and memory.key_count() == 3
    assert index_table(db, name + "__pk") == name
    assert index_table(db, name + "__kc") == index_table(db, name + "__ann") == name + "__keys"  # never cut to 63 bytes
    memory.close()


# ----------------------------------------------------------------------------------------------- limits of the server


@pytest.mark.parametrize("dim, half", [(2001, False), (4001, True)])
def test_a_dimension_the_ann_index_cannot_hold_is_a_clear_error(pg, dim, half):
    """pgvector indexes at most 2000 dimensions of ``vector`` and 4000 of ``halfvec``: say so (before the build, ideally),
    never a raw psycopg2 ProgramLimitExceeded out of ``finish`` after every batch was written."""
    with pytest.raises(ValueError, match="2000|4000"):
        build(pg.url(), f"wide_{dim}", ("a",), dim=dim, half=half)


def test_ivfflat_lists_beyond_pgvectors_limit_are_refused_up_front(pg):
    with pytest.raises(ValueError, match="lists"):
        PgMemoryWriter(pg.url(), "many_lists", DIM, index="ivfflat", lists=40000)  # pgvector: 1 .. 32768


def test_an_hnsw_memory_with_top_k_over_1000_is_refused_or_keeps_working(pg):
    """``ef_search`` is at least ``top_k``, and pgvector's ``hnsw.ef_search`` stops at 1000: such a memory is refused up
    front, or every lookup works (a bad setting would pass the first lookup, set before the extension loads, and fail later)."""
    try:
        writer = PgMemoryWriter(pg.url(), "big_k", DIM, top_k=1001)
    except ValueError:
        return  # refused up front: fine
    writer.add(["a"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    memory = writer.finish()
    q = np.eye(1, DIM)
    assert memory.lookup(q)[1] == [["a"]]
    assert memory.lookup(q)[1] == [["a"]]
    memory.close()


@pytest.mark.parametrize(
    "option",
    [{"probes": 0}, {"probes": -1}, {"probes": 40000}, {"ef_search": 5000}, {"ef_search": -5}],
    ids=["probes=0", "probes=-1", "probes=40000", "ef_search=5000", "ef_search=-5"],
)
def test_probes_and_ef_search_out_of_range_are_refused_when_opened(pg, option):
    """Out of pgvector's range, a setting would pass the first lookup (set before the extension loads) and fail the next
    with advice to rebuild the memory: it is refused when the memory is opened."""
    index = "ivfflat" if "probes" in option else "hnsw"
    name = f"range_{index}"
    if name not in memory_names(pg.url()):
        build(pg.url(), name, index=index)
    with pytest.raises(ValueError, match="probes|ef_search"):
        PgMemory(pg.url(), name, **option)


# ------------------------------------------------------------------------------------------------------------ vectors


@pytest.mark.parametrize(
    "vector, half",
    [
        pytest.param([1e5, 2e5, 0, 0], True, id="beyond-half-range-before-normalising"),
        pytest.param([1e20, 0, 0, 1], True, id="square-overflows-float32-half"),
        pytest.param([3e19, 4e19, 0, 0], False, id="square-overflows-float32-full"),
        pytest.param([1e-20, 2e-20, 0, 0], True, id="underflows-half-after-the-1e-12-floor"),
    ],
)
def test_a_finite_nonzero_vector_is_held_as_its_unit_direction(pg, db, vector, half):
    """Rows are normalised before they are written, so a value over 65504 is fine; a row too long for float32's squares
    (norm inf) or too short (under the 1e-12 floor, then rounded to zeros by half precision) keeps its direction too,
    never a chunk that pulls nothing or a key never found."""
    name = f"direction_{abs(hash((tuple(vector), half))) % 10**8}"
    v = np.asarray([vector], dtype=np.float64)
    writer = PgMemoryWriter(pg.url(), name, DIM, half=half)
    writer.add(["a"], v, v, np.array([0]))
    writer.finish().close()
    want = v[0] / np.linalg.norm(v[0])
    chunk = np.asarray(run(db, sql.SQL("SELECT chunk::real[] FROM {}").format(sql.Identifier(name)).as_string(db))[0][0])
    key = np.asarray(run(db, sql.SQL("SELECT key::real[] FROM {}").format(sql.Identifier(name + "__keys")).as_string(db))[0][0])
    assert np.allclose(chunk, want, atol=2e-3) and np.allclose(key, want, atol=2e-3), (chunk, key, want)


def test_a_nan_query_is_the_query_s_fault_not_the_table_s(pg):
    memory = build(pg.url(), "nan_query")
    for bad in ([np.nan, 0, 0, 1], [np.inf, 0, 0, 1]):
        with pytest.raises(ValueError) as refused:
            memory.lookup(np.asarray([bad]))
        assert "build the memory again" not in str(refused.value), str(refused.value)  # the table is fine
    memory.close()


# ------------------------------------------------------------------------------------------------ chunks and keys agree


def test_text_hashes_must_match_the_chunks(pg, db):
    """``zip`` in ``write_chunks`` stops at the shorter list: with fewer hashes than chunks the last chunks are not written
    but their keys are, keys naming no chunk."""
    memory = build(pg.url(), "hash_count")
    with pytest.raises(ValueError):
        memory.add_chunks(["d", "e"], np.eye(2, DIM), np.eye(2, DIM), np.array([0, 1]), ["h-d"])
    assert orphan_keys(db, "hash_count") == 0 and sorted(memory.chunk_hashes()) == ["a", "b", "c"]
    memory.close()
    writer = PgMemoryWriter(pg.url(), "hash_count_w", DIM)
    with pytest.raises(ValueError):
        writer.add(["a", "b"], np.eye(2, DIM), np.eye(2, DIM), np.array([0, 1]), ["h-a"])
    assert orphan_keys(db, "hash_count_w__building") == 0
    writer._conn.close()


def test_a_write_cut_off_between_the_chunks_and_the_keys_changes_nothing(pg, db, monkeypatch):
    """``add_chunks`` replaces chunk ``a``: the server goes away after the chunk rows' COPY, before the keys'. One
    transaction: the old chunk and its keys are both still there, and no key row is left without its chunk."""
    memory = build(pg.url(), "cut_mid_copy")
    before = (memory.chunk_hashes(), memory.key_count())
    original, calls = pg_rows.copy_rows, []

    def copy_then_die(cur, table, *args, **kwargs):
        calls.append(table)
        if table.endswith("__keys"):
            kill(db, memory._conn)
        return original(cur, table, *args, **kwargs)

    monkeypatch.setattr(pg_rows, "copy_rows", copy_then_die)
    with pytest.raises(Exception):
        memory.add_chunks(["a", "n"], np.ones((2, DIM)), np.ones((3, DIM)), np.array([0, 0, 1]), ["new-a", "new-n"])
    monkeypatch.setattr(pg_rows, "copy_rows", original)
    assert calls[:2] == ["cut_mid_copy", "cut_mid_copy__keys"]  # the chunk rows were sent before the cut (then once again)
    again = PgMemory(pg.url(), "cut_mid_copy")
    assert (again.chunk_hashes(), again.key_count()) == before and orphan_keys(db, "cut_mid_copy") == 0
    again.close()


def test_a_memory_write_after_a_lost_connection_is_a_clear_error_and_the_memory_recovers(pg, db):
    """``remove``, ``add_chunks``, ``update`` and ``chunk_hashes`` open a lost connection again, as ``lookup`` does (or
    say clearly that the server is gone); never a raw psycopg2 InterfaceError on every later call."""
    memory = build(pg.url(), "lost_write")
    kill(db, memory._conn)
    try:
        assert memory.remove(["not-held"]) == 0
    except PgMemoryError:
        pass  # a clear error: fine
    assert sorted(memory.chunk_hashes()) == ["a", "b", "c"]
    memory.close()


def test_a_reader_open_across_a_rebuild_sees_the_new_memory_whole(pg):
    url = pg.url()
    reader = build(url, "rebuilt", ("a", "b"))
    build(url, "rebuilt", ("x", "y", "z"))
    sims, ids, _ = reader.lookup(np.eye(3, DIM))
    assert [found[0] for found in ids] == ["x", "y", "z"] and all(sorted(found) == ["x", "y", "z"] for found in ids)
    assert np.allclose(sims[:, 0], 1.0, atol=1e-3)  # nothing of the old build ("a", "b") is seen
    assert len(reader) == 3 and reader.key_count() == 3
    reader.close()


def test_a_reader_open_across_a_rebuild_of_another_shape_writes_nothing_and_says_so(pg, db):
    """Rebuilt with 8 dimensions: the old reader's ``add_chunks`` of 4-dimensional rows writes nothing and says to open the
    memory again."""
    url = pg.url()
    reader = build(url, "reshaped", ("a",))
    build(url, "reshaped", ("x",), dim=8)
    with pytest.raises(ValueError):
        reader.add_chunks(["q"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    assert rows_of(db, "reshaped")[0][0] == "x" and len(rows_of(db, "reshaped")) == 1
    reader.close()


# ------------------------------------------------------------------------------------------------------------ writers


def test_two_writers_of_one_name_never_mix_or_lose_rows(pg):
    """A second writer of a name (resume=False) would drop the first one's staging tables, losing its earlier chunks and
    mixing in its own: it is refused while the first builds."""
    url = pg.url()
    first = PgMemoryWriter(url, "twice", DIM)
    first.add(["a", "b"], np.eye(2, DIM), np.eye(2, DIM), np.array([0, 1]))
    try:
        second = PgMemoryWriter(url, "twice", DIM)
    except PgMemoryError:
        second = None  # refused while the first builds: fine
    if second is not None:
        second.add(["x"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    first.add(["c"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    memory = first.finish()
    try:
        assert sorted(memory.chunk_hashes()) == ["a", "b", "c"]
    finally:
        memory.close()
        if second is not None:
            second._conn.close()


def test_adding_after_finish_never_advises_a_resume(pg):
    """After ``finish`` a writer's ``add`` says the build is finished; advice to resume would start a new build that
    replaces the finished memory with only the later batches."""
    writer = PgMemoryWriter(pg.url(), "added_late", DIM)
    writer.add(["a"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    writer.finish().close()
    with pytest.raises(ValueError) as refused:
        writer.add(["b"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
    assert "resume=True" not in str(refused.value) and "finish" in str(refused.value), str(refused.value)


def test_resuming_with_the_other_precision_is_refused(pg):
    url = pg.url()
    with pytest.raises(RuntimeError, match="died"):
        with PgMemoryWriter(url, "half_resume", DIM, half=True) as writer:
            writer.add(["a"], np.eye(1, DIM), np.eye(1, DIM), np.array([0]))
            raise RuntimeError("died")
    with pytest.raises(PgMemoryError, match="resume=False"):
        PgMemoryWriter(url, "half_resume", DIM, half=False, resume=True)
    resumed = PgMemoryWriter(url, "half_resume", DIM, half=True, resume=True)
    assert resumed.add(["a", "b"], np.eye(2, DIM), np.eye(2, DIM), np.array([0, 1])) == 1  # "a" was kept
    memory = resumed.finish()
    assert sorted(memory.chunk_hashes()) == ["a", "b"] and memory.half is True
    memory.close()


@pytest.mark.parametrize("index", ["hnsw", "ivfflat"])
@pytest.mark.parametrize("chunks", [0, 2], ids=["nothing-added", "chunks-without-keys"])
def test_a_memory_without_keys_finishes_and_finds_nothing(pg, index, chunks):
    writer = PgMemoryWriter(pg.url(), f"keyless_{index}_{chunks}", DIM, index=index)
    if chunks:
        writer.add(["a", "b"], np.eye(2, DIM), np.zeros((0, DIM)), np.zeros(0, dtype=int))
    memory = writer.finish()
    config = memory.get_config_dict()
    assert len(memory) == chunks and memory.key_count() == 0
    if index == "ivfflat":
        assert config["probes"] >= 1 and config["lists"] >= 1 and config["measured_recall"] is not None
    sims, ids, _ = memory.lookup(np.eye(2, DIM))
    assert ids == [[], []] and np.isneginf(sims).all()
    memory.close()


def test_ivfflat_probes_are_chosen_from_a_measurement_never_from_an_empty_sample(pg):
    """``choose_probes`` samples blocks (``TABLESAMPLE SYSTEM``): with short rows the sample can come back empty; the
    probes must still come from a measurement. 1500 keys of 4 dimensions, 38 lists: probes 1 finds far fewer than 95%."""
    rng = np.random.default_rng(0)
    n, top_k = 1500, 8
    keys = rng.normal(size=(n, DIM)).astype(np.float32)
    writer = PgMemoryWriter(pg.url(), "sampled", DIM, index="ivfflat", top_k=top_k)
    writer.add([f"c{i}" for i in range(n)], keys, keys, np.arange(n))
    memory = writer.finish()
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    queries = unit[:64]
    exact = np.argsort(-(queries @ unit.T), axis=1)[:, :top_k]
    _, found, _ = memory.lookup(queries)
    recall = np.mean([len({f"c{j}" for j in e} & set(f)) / top_k for e, f in zip(exact, found)])
    config = memory.get_config_dict()
    memory.close()
    assert recall >= 0.9 or config["measured_recall"] < 0.95, (config["probes"], config["measured_recall"], recall)


# -------------------------------------------------------------------------------------------------- a tampered record

BAD_CONFIGS = {
    "not-json": "{not json",
    "a-list": "[1]",
    "null": "null",
    "a-string": '"x"',
    "missing-dim": {"dim": None},
    "dim-not-a-number": {"dim": "abc"},
    "dim-zero": {"dim": 0},
    "dim-negative": {"dim": -4},
    "top_k-negative": {"top_k": -1},
    "top_k-zero": {"top_k": 0},
    "weight-nan": {"weight": float("nan")},
    "temperature-negative": {"temperature": -1.0},
    "probes-negative": {"probes": -3},
    "probes-zero": {"probes": 0},
    "probes-huge": {"probes": 10**12},
    "probes-sql": {"probes": "1; DROP TABLE victim; --"},
    "index-unknown": {"index": "flat"},
    "index-sql": {"index": "ivfflat'; DROP TABLE victim; --"},
    "half-a-string": {"half": "false"},
    "layout-later": {"layout": 3},
}


@pytest.fixture(scope="module")
def tampered(pg, db):
    """An IVFFlat memory whose record each test rewrites, and its record as written."""
    build(pg.url(), "tampered", index="ivfflat").close()
    return json.loads(run(db, "SELECT config FROM adapterkit_memories WHERE name = 'tampered'")[0][0])


@pytest.mark.parametrize("bad", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_tampered_record_is_a_clear_error_when_opened(pg, db, tampered, bad):
    run(db, "DROP TABLE IF EXISTS victim")
    run(db, "CREATE TABLE victim (id int)")
    run(db, "INSERT INTO victim VALUES (1)")
    if isinstance(bad, str):
        config = bad
    else:
        changed = dict(tampered, **bad)
        config = json.dumps({k: v for k, v in changed.items() if v is not None})
    run(db, "UPDATE adapterkit_memories SET config = %s WHERE name = 'tampered'", (config,))
    try:
        with pytest.raises(PgMemoryError, match="tampered"):
            PgMemory(pg.url(), "tampered")
    finally:
        run(db, "UPDATE adapterkit_memories SET config = %s WHERE name = 'tampered'", (json.dumps(tampered),))
    assert rows_of(db, "victim") == [(1,)]


def test_a_record_of_a_later_layout_is_not_called_earlier(pg, db, tampered):
    run(db, "UPDATE adapterkit_memories SET config = %s WHERE name = 'tampered'", (json.dumps(dict(tampered, layout=3)),))
    try:
        with pytest.raises(PgMemoryError) as refused:
            PgMemory(pg.url(), "tampered")
    finally:
        run(db, "UPDATE adapterkit_memories SET config = %s WHERE name = 'tampered'", (json.dumps(tampered),))
    assert "earlier adapterkit" not in str(refused.value), str(refused.value)
