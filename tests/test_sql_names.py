"""No name ever becomes SQL: store tables, schemas and memory tables reach a real PostgreSQL quoted, values as parameters.

Every test starts from a fresh ``victim`` table and checks that it is still there, unchanged, afterwards.
"""

from __future__ import annotations

import os
from typing import List, Optional
from urllib.parse import quote, urlencode

import numpy as np
import psycopg2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import TextNode
from psycopg2 import sql

from adapterkit.cli import main
from adapterkit.memory import pg_memory
from adapterkit.memory.pg_memory import PgMemory, PgMemoryWriter, memory_names
from adapterkit.pipeline.sources import chunks_from_store, open_store
from adapterkit.stores.stored_vectors import read_stored, store_top_k

VICTIM = [(1, "alpha"), (2, "beta")]
TEXTS = [
    "Fruit bats pollinate many tropical plants and spread their seeds at night.",
    "Tides are caused mainly by the gravitational pull of the Moon on the oceans.",
    "Glaciers form where snow accumulates faster than it melts over many years.",
    "Volcanoes erupt when magma rises through cracks in the crust of the Earth.",
    "Honey bees tell each other where flowers are with a waggle dance in the hive.",
    "Comet tails point away from the Sun because of the solar wind and radiation.",
]
# Aimed at the store "c" (table data_c): each closes the quoted name and appends statements of its own.
STORE_PAYLOADS = {
    "double-quote": ('c") to stdout (format binary);drop table victim;commit;--', "does not exist"),
    "double-quote-long": ('c" ORDER BY id) TO STDOUT WITH (FORMAT binary); DROP TABLE victim; COMMIT; --', "63 bytes"),
    "single-quote": ("c'); drop table victim; commit; --", "does not exist"),
    "nul": ('c\x00") to stdout;drop table victim;commit;--', "NUL byte"),
    "200-characters": ("c" * 200, "63 bytes"),
    "dot": ("public.c", "does not exist"),
    "unicode": ("çhünks—ß ☃", "does not exist"),
}
MEMORY_PAYLOADS = ['m"; drop table victim; --', "m'); drop table victim; --", "m\x00", "m" * 200, "a.b", "mémoire", "Upper", ""]


def rows_of(db, *name: str) -> Optional[List[tuple]]:
    """Every row of a table (None: there is no such table)."""
    try:
        with db.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(*name)))
            return cur.fetchall()
    except psycopg2.errors.UndefinedTable:
        return None


def indexes_of(db, table: str) -> List[str]:
    with db.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s", (table,))
        return [r[0] for r in cur.fetchall()]


@pytest.fixture
def victim(db):
    """A table no input may touch; the fixture is a check that it is intact."""
    with db.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS victim")
        cur.execute("CREATE TABLE victim (id int PRIMARY KEY, secret text)")
        cur.execute("INSERT INTO victim VALUES (1, 'alpha'), (2, 'beta')")
    return lambda: rows_of(db, "victim") == VICTIM


@pytest.fixture(scope="module")
def nodes(bge):
    vectors = bge.get_text_embedding_batch(TEXTS)
    return [TextNode(id_=f"chunk-{i}", text=t, embedding=v) for i, (t, v) in enumerate(zip(TEXTS, vectors))]


@pytest.fixture(scope="module")
def store_c(pg, nodes):
    """The store the payloads aim at: six real chunks with bge vectors in table data_c."""
    pg.vector_store("c", embed_dim=384).add(nodes)
    return nodes


def uri(pg, table: str) -> str:
    return "postgresql://postgres@/postgres?" + urlencode({"host": pg.socket_dir, "table": table}, quote_via=quote)


def read(store) -> List[tuple]:
    return [(i, t, v) for batch in read_stored(store, batch_size=4) for i, t, v in zip(batch.ids, batch.texts, batch.vectors)]


def same_rows(found: List[tuple], nodes: List[TextNode]) -> bool:
    return [(i, t) for i, t, _ in found] == [(n.node_id, n.text) for n in nodes] and all(
        np.array_equal(v, np.asarray(n.embedding, dtype=np.float32)) for (_, _, v), n in zip(found, nodes)
    )


@pytest.mark.parametrize("payload, message", STORE_PAYLOADS.values(), ids=STORE_PAYLOADS.keys())
def test_a_store_uri_carrying_sql_reads_nothing_else(pg, db, store_c, victim, payload, message):
    with pytest.raises(ValueError, match=message) as refused:
        read(open_store(uri(pg, payload)))
    if message == "does not exist":  # names the table it looked for, and the stores that are there
        assert "data_" in str(refused.value) and "'c'" in str(refused.value)
    assert victim() and len(rows_of(db, "public", "data_c")) == len(store_c)


@pytest.mark.parametrize("name", ["double-quote", "double-quote-long", "nul", "200-characters"])
def test_the_cli_refuses_a_store_uri_carrying_sql(pg, db, store_c, victim, tmp_path, capsys, name):
    payload, message = STORE_PAYLOADS[name]
    code = main(["fit", "--store", uri(pg, payload), "--out", str(tmp_path / "model"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert victim() and len(rows_of(db, "public", "data_c")) == len(store_c)


def test_a_schema_name_carrying_sql_reads_nothing_else(pg, db, store_c, victim):
    from llama_index.vector_stores.postgres import PGVectorStore

    def store(schema: str) -> PGVectorStore:
        return PGVectorStore.from_params(
            connection_string=pg.url(), async_connection_string=pg.url("asyncpg"), table_name="c", schema_name=schema, embed_dim=384
        )

    with pytest.raises(ValueError, match="does not exist"):
        read(store('public"."data_c") to stdout;drop table victim;commit;--'))
    with pytest.raises(ValueError, match="NUL byte"):
        read(store("public\x00x"))
    assert same_rows(read(store("PUBLIC")), store_c)  # LlamaIndex lower-cases the schema as it does the table
    assert victim()


@pytest.mark.parametrize(
    "name",
    ["My Chunks", "chunks-2024", "dotted.name", "ünïcødé ☃", "it's", 'say "hi"', "50%s off %%", "i on victim (id); drop table victim; --"],
)
def test_unusual_store_names_work_end_to_end(pg, db, nodes, victim, tmp_path, bge, name):
    """Written by LocalPostgres' store (its HNSW index included), read back through a URI as fit reads it."""
    store = pg.vector_store(name, embed_dim=384)
    store.add(nodes)
    assert same_rows(read(open_store(uri(pg, name))), nodes)
    source = chunks_from_store(uri(pg, name), bge, cache=tmp_path / "cache", verify=3, show_progress=False)
    assert source.corpus == {n.node_id: n.text for n in nodes}
    assert store_top_k(store, [nodes[2].embedding], 1) == [[nodes[2].node_id]]
    assert f"data_{name.lower()}_embedding_idx" in indexes_of(db, f"data_{name.lower()}")  # the HNSW index was built
    assert victim()


def test_local_postgres_refuses_names_it_cannot_hold(pg, db, victim):
    tiny = [TextNode(id_=f"n{i}", text=f"tiny {i}", embedding=[float(i), 1.0, 0.0, 0.5]) for i in range(3)]
    for name, message in (("", "non-empty"), ("c\x00x", "NUL byte"), ("a" * 45, "at most 44 bytes"), ("é" * 23, "at most 44 bytes")):
        with pytest.raises(ValueError, match=message):
            pg.vector_store(name, embed_dim=4)
    with pytest.raises(ValueError, match="at most 57 bytes"):
        pg.vector_store("a" * 58, embed_dim=4, hnsw=False)
    with pytest.raises(ValueError, match="NUL byte"):
        pg.vector_store("fine", embed_dim=4, schema_name="public\x00")
    long = pg.vector_store("a" * 57, embed_dim=4, hnsw=False)  # the longest name without an HNSW index
    long.add(tiny)
    assert same_rows(read(open_store(uri(pg, "a" * 57))), tiny)
    assert victim()


@pytest.mark.parametrize("name", MEMORY_PAYLOADS)
def test_memory_names_carrying_sql_are_refused(pg, store_c, victim, tmp_path, capsys, name):
    with pytest.raises(ValueError, match="memory name"):
        PgMemoryWriter(pg.url(), name, dim=4)
    with pytest.raises(ValueError, match="memory name"):
        PgMemory(pg.url(), name)
    code = main(["fit", "--store", uri(pg, "c"), "--memory-table", name, "--out", str(tmp_path / "model"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "memory name" in err and "Traceback" not in err, err
    assert victim()


@pytest.mark.parametrize(
    "name, index",
    [
        ('m"; drop table victim; --', "hnsw"),
        ("m%s'); drop table victim; --", "ivfflat"),
        ("Order", "hnsw"),
        ("with space.and dot", "ivfflat"),
        ("mémoire ☃", "hnsw"),
    ],
)
def test_memory_sql_is_safe_without_the_name_check(pg, victim, monkeypatch, name, index):
    """The name check gives a clear error; the SQL itself takes any name as written."""
    monkeypatch.setattr(pg_memory, "check_name", lambda given: given)
    rng = np.random.default_rng(0)
    chunks, keys = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4, 4)).astype(np.float32)
    with PgMemoryWriter(pg.url(), name, dim=4, index=index, top_k=2) as writer:
        writer.add(["a", "b"], chunks[:2], keys[:3], np.array([0, 0, 1]), ["ha", "hb"])
        writer.add(["c"], chunks[2:], keys[3:], np.array([0]), ["hc"])
    memory = PgMemory(pg.url(), name)
    try:
        assert len(memory) == 3 and memory.key_count() == 4 and name in memory_names(pg.url())
        _, found, _ = memory.lookup(keys[3:])
        assert found[0][0] == "c"
        memory.add_chunks(["d"], chunks[:1], keys[:1], np.array([0]), ["hd"])
        assert memory.chunk_hashes() == {"a": "ha", "b": "hb", "c": "hc", "d": "hd"} and memory.remove(["d", "zz"]) == 1
    finally:
        memory.close()
    with pytest.raises(ValueError, match="NUL byte"):  # libpq would end the name at the NUL: "victim"
        PgMemoryWriter(pg.url(), "victim\x00", dim=4)
    assert victim()


def test_any_table_name_is_read_as_written_or_refused(pg, db, victim):
    """Arbitrary text as a store's table name (through a URI) and a memory name: a correct read or a ValueError, never SQL."""
    tiny = [TextNode(id_=f"n{i}", text=f"tiny {i}", embedding=[float(i), 1.0, 0.0, 0.5]) for i in range(2)]
    ran, outcomes = [], {"read": 0, "refused": 0}

    @settings(max_examples=int(os.environ.get("ADAPTERKIT_FUZZ_EXAMPLES", "60")), deadline=None, database=None)
    @given(
        st.one_of(
            st.text(max_size=70),
            st.text(alphabet="\"'`;-%s()., \x00\\$aZé☃", max_size=40),
            st.builds(lambda a, b: a + '"' + b, st.text(max_size=10), st.text(max_size=40)),
        )
    )
    def check(name: str) -> None:
        ran.append(name)
        table = "data_" + name.lower()
        holdable = bool(name) and "\x00" not in name and len(table.encode()) <= 63
        assume(not holdable or rows_of(db, "public", table) is None)  # a name another test made
        if holdable:  # made here, quoted, so the read has something to find
            with db.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id bigserial PRIMARY KEY, text varchar NOT NULL, metadata_ json, node_id varchar, "
                        "embedding vector(4))"
                    ).format(sql.Identifier(table))
                )
                cur.executemany(
                    sql.SQL("INSERT INTO {} (text, node_id, embedding) VALUES (%s, %s, %s)").format(
                        sql.Identifier(table.replace("%", "%%"))
                    ),
                    [(n.text, n.node_id, str(n.embedding)) for n in tiny],
                )
        try:
            if holdable:
                assert same_rows(read(open_store(uri(pg, name))), tiny)
            else:
                with pytest.raises(ValueError):
                    read(open_store(uri(pg, name)))
            outcomes["read" if holdable else "refused"] += 1
            try:
                PgMemory(pg.url(), name).close()
                assert name in memory_names(pg.url())
            except ValueError:
                pass
        finally:
            if holdable:
                with db.cursor() as cur:
                    cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        assert victim()

    check()
    print(f"{len(ran)} generated names: {outcomes}")
    assert len(ran) >= 30
