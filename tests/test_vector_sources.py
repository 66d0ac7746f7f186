"""Training and evaluating from vectors already in a vector store: a real PostgreSQL + pgvector server, and Qdrant."""

from __future__ import annotations

import re

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode

from adapterkit import (
    EmbeddingAdapterFinetuneEngine,
    EmbeddingCache,
    EmbeddingQAFinetuneDataset,
    evaluate,
)
from adapterkit.cache import embed_texts
from adapterkit.data.documents import corpus_to_nodes
from adapterkit.stores.counting import CountingEmbedding
from adapterkit.stores.indexes import embed_nodes_once
from adapterkit.stores.postgres import LocalPostgres
from adapterkit.stores.stored_vectors import (
    VERIFY_ROWS,
    StoredBatch,
    cache_stored_vectors,
    exact_top_k,
    read_stored,
    recall_at_k,
    store_top_k,
)
from conftest import take


@pytest.fixture(scope="module")
def uber(val_full):
    return take(val_full, 40)


@pytest.fixture(scope="module")
def uber_nodes(uber, bge):
    return embed_nodes_once(corpus_to_nodes(uber), bge, show_progress=False)


def _write(store, nodes, model):
    VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=model)


def _split(dataset: EmbeddingQAFinetuneDataset, corpus):
    qids = list(dataset.queries)
    held = set(qids[::5])
    part = lambda keep: EmbeddingQAFinetuneDataset(  # noqa: E731
        queries={q: dataset.queries[q] for q in qids if keep(q)},
        corpus=corpus,
        relevant_docs={q: dataset.relevant_docs[q] for q in qids if keep(q)},
    )
    return part(lambda q: q not in held), part(lambda q: q in held)


def _train_and_evaluate(train, test, model, cache, folder):
    engine = EmbeddingAdapterFinetuneEngine(
        train, model, cache=cache, unlabeled_corpus=train.corpus, epochs=4, model_output_path=folder, show_progress=False
    )
    engine.finetune()
    return evaluate(test, engine.get_finetuned_model(), top_k=5, cache=cache)


def test_pgvector_server_trains_and_evaluates_from_stored_vectors_alone(pg, uber, uber_nodes, bge, tmp_path):
    store = pg.vector_store("uber_chunks", embed_dim=384)
    _write(store, uber_nodes, bge)
    assert "1 row" in pg.psql("SELECT count(*) FROM pg_extension WHERE extname = 'vector';")

    # Read back in small batches: the same ids, texts and (float32) vectors that were written.
    batches = list(read_stored(store, batch_size=7))
    assert [len(b.ids) for b in batches][:-1] == [7] * (len(batches) - 1)
    stored = {i: v for b in batches for i, v in zip(b.ids, b.vectors)}
    assert set(stored) == set(uber.corpus)
    assert all(np.array_equal(stored[n.node_id], np.asarray(n.embedding, dtype=np.float32)) for n in uber_nodes)

    # A base model that counts every text it is asked to embed, over an empty cache: documents can only come from the store.
    counter = CountingEmbedding(bge, cache=False)
    cache = EmbeddingCache(tmp_path / "cache")
    corpus = cache_stored_vectors(store, counter, cache=cache, batch_size=7)
    assert corpus == uber.corpus and counter.counts == {"text": VERIFY_ROWS, "query": 0}  # the store check, nothing else
    counter.reset()
    train, test = _split(uber, corpus)
    from_store = _train_and_evaluate(train, test, counter, cache, tmp_path / "from_store")
    assert counter.counts["text"] == 0 and counter.counts["query"] > 0  # queries (and sentence keys) only

    # The in-memory path (documents embedded by the model) gives the same results.
    in_memory = _train_and_evaluate(train, test, bge, None, tmp_path / "in_memory")
    assert from_store["rank"].tolist() == in_memory["rank"].tolist()
    assert from_store["retrieved"].tolist() == in_memory["retrieved"].tolist()

    # Exact search over streamed batches matches evaluate; the store's own (HNSW) search is measured against it.
    base = evaluate(test, bge, top_k=5)
    queries = np.stack([bge.get_query_embedding(q) for q in test.queries.values()])
    exact, scores = exact_top_k(queries, read_stored(store, batch_size=9), k=5)
    assert exact == base["retrieved"].tolist() and np.all(np.diff(scores, axis=1) <= 0)
    found = store_top_k(store, queries, k=5)
    assert recall_at_k(found, exact, 5) >= 0.9


def test_qdrant_collection_is_read_the_same_way(uber, uber_nodes, bge, tmp_path):
    from adapterkit.stores.indexes import (
        build_qdrant_index,
        load_qdrant_index,
        open_qdrant,
    )

    build_qdrant_index(uber_nodes, bge, tmp_path / "qdrant", collection="uber")
    client = open_qdrant(tmp_path / "qdrant")
    try:
        store = load_qdrant_index(client, bge, collection="uber").vector_store
        batches = list(read_stored(store, batch_size=16))
        stored = {i: (t, v) for b in batches for i, t, v in zip(b.ids, b.texts, b.vectors)}
        assert {i: t for i, (t, _) in stored.items()} == uber.corpus
        for node in uber_nodes:
            np.testing.assert_allclose(stored[node.node_id][1], node.embedding, rtol=1e-6, atol=1e-6)
    finally:
        client.close()


def test_a_store_built_by_another_model_is_refused(pg, uber_nodes, bge, tmp_path):
    store = pg.vector_store("uber_checked", embed_dim=384)
    _write(store, uber_nodes, bge)
    minilm_like = [StoredBatch(b.ids, b.texts, np.roll(b.vectors, 1, axis=1)) for b in read_stored(store)]  # same size, other vectors
    with pytest.raises(ValueError, match="not made by"):
        cache_stored_vectors(None, bge, cache=tmp_path / "c", batches=iter(minilm_like), verify=3)
    assert len(EmbeddingCache(tmp_path / "c")) == 0  # nothing was written
    corpus = cache_stored_vectors(store, bge, cache=tmp_path / "c", verify=3)  # the right model passes
    assert len(corpus) == len(uber_nodes)


def test_a_store_whose_later_rows_another_model_made_never_reaches_the_cache(pg, uber_nodes, bge, tmp_path):
    """The first rows are the model's own; every row after the third holds MiniLM's vector of its text (same
    size). The seeded sample finds one, names it, and the cache holds no vector of the store afterwards;
    an all-zero row is refused too. A later request for bge's vector of a stored text is bge's own."""
    from adapterkit import resolve_embed_model

    minilm = resolve_embed_model("minilm")
    texts = [n.text for n in uber_nodes]
    mixed = np.concatenate([np.asarray([n.embedding for n in uber_nodes[:3]], dtype=np.float32), embed_texts(minilm, texts[3:])])
    batches = [StoredBatch([n.node_id for n in uber_nodes], texts, mixed)]
    cache = EmbeddingCache(tmp_path / "c")
    with pytest.raises(
        ValueError, match=r"stored vector of node '.+' was not made by .*Nothing of this store was put in the embedding cache"
    ):
        cache_stored_vectors(None, bge, cache=cache, batches=iter(batches))
    assert len(cache) == 0  # neither under bge's identity nor staged
    with pytest.raises(ValueError, match="at least|whole number >= 1"):
        cache_stored_vectors(None, bge, cache=cache, batches=iter(batches), verify=0)
    zero = mixed.copy()
    zero[3:] = np.asarray([n.embedding for n in uber_nodes[3:]], dtype=np.float32)
    zero[7] = 0.0
    with pytest.raises(ValueError, match=f"node '{uber_nodes[7].node_id}' is all zeros"):
        cache_stored_vectors(None, bge, cache=cache, batches=iter([StoredBatch(batches[0].ids, texts, zero)]))
    assert len(cache) == 0
    # the same rows in PostgreSQL, through sample_stored_corpus (a sampled fit reads this way)
    from adapterkit.stores.training_sample import sample_stored_corpus

    store = pg.vector_store("uber_mixed", embed_dim=384)
    store.add([TextNode(id_=n.node_id, text=t, embedding=v.tolist()) for n, t, v in zip(uber_nodes, texts, mixed)])
    with pytest.raises(ValueError, match="was not made by"):
        sample_stored_corpus(store, bge, keep={uber_nodes[0].node_id}, sample=5, cache=cache)
    assert len(cache) == 0
    fresh = embed_texts(bge, texts[3:4], cache=cache)
    np.testing.assert_allclose(fresh[0], uber_nodes[3].embedding, atol=1e-5)  # bge's own vector, computed, not the stored MiniLM one


def test_unsupported_empty_and_broken_stores_say_what_to_do(pg, tmp_path, bge):
    from llama_index.core.vector_stores import SimpleVectorStore

    with pytest.raises(TypeError, match="PGVectorStore"):
        next(read_stored(SimpleVectorStore()))
    with pytest.raises(RuntimeError, match="never_written.*does not exist"):
        next(read_stored(pg.vector_store("never_written", embed_dim=384)))
    empty = pg.vector_store("nothing_here", embed_dim=384)
    empty.add([])  # creates the table
    with pytest.raises(ValueError, match="holds no nodes"):
        cache_stored_vectors(empty, bge, cache=tmp_path / "c")
    broken = StoredBatch(["a", "b"], ["x", "y"], np.array([[1.0, 0.0], [np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="node 'b' is not finite"):
        cache_stored_vectors(None, bge, cache=tmp_path / "c", batches=iter([broken]))


def test_a_cross_model_adapter_serves_new_model_queries_from_an_old_model_store(pg, val_full, bge, tmp_path):
    """An index built by MiniLM in PostgreSQL, queried with bge through a cross-model adapter."""
    from adapterkit import AdapterEmbeddingModel, resolve_embed_model
    from adapterkit.cross_model import CrossModelError
    from adapterkit.query_vectors import adapt_queries
    from adapterkit.stores.stored_vectors import check_serving

    minilm = resolve_embed_model("minilm")
    uber = take(val_full, 140)  # the start map needs a pair of texts per dimension (384) from the training rows
    store = pg.vector_store("uber_minilm", embed_dim=384, hnsw=False)  # exact search: the comparison is exact
    _write(store, embed_nodes_once(corpus_to_nodes(uber), minilm, show_progress=False), minilm)
    old = CountingEmbedding(minilm, cache=False)
    corpus = cache_stored_vectors(store, old)  # into the shared cache: bge's vectors of these texts are shared with other tests
    old.reset()  # after the store check
    train, test = _split(uber, corpus)
    engine = EmbeddingAdapterFinetuneEngine(
        train,
        bge,
        index_model=old,
        unlabeled_corpus=corpus,
        epochs=3,
        map_sample=1.0,
        model_output_path=tmp_path / "cross",
        show_progress=False,
    )
    assert engine.map_info["sample_chunks"] == engine.map_info["corpus_chunks"] < 140 and engine.map_info["query_pairs"] > 300
    engine.finetune()
    assert old.counts["text"] == 0  # the old model embeds queries (for the start map), never a document

    # Before saving: the trained adapter and memories over bge's query vectors, searched exactly over the stored vectors.
    queries = list(test.queries.values())
    trained = adapt_queries(engine.model, np.stack([bge.get_query_embedding(q) for q in queries]), list(engine.memories.values()))
    before, _ = exact_top_k(trained, read_stored(store, batch_size=16), k=5)
    # After: the folder loaded over bge, served by LlamaIndex from the PostgreSQL table.
    served = AdapterEmbeddingModel(bge, tmp_path / "cross", index_model=minilm)
    assert check_serving(served, store) == 384
    retriever = VectorStoreIndex.from_vector_store(store, embed_model=served).as_retriever(similarity_top_k=5)
    after = [[n.node.node_id for n in retriever.retrieve(q)] for q in queries]
    assert after == before
    assert evaluate(test, served, top_k=5)["mrr"].mean() > evaluate(test, minilm, top_k=5)["mrr"].mean() - 0.05

    from llama_index.embeddings.adapter import AdapterEmbeddingModel as LlamaIndexAdapterModel

    with pytest.raises(FileNotFoundError):  # LlamaIndex's own loader would embed documents with bge: it finds no weights
        LlamaIndexAdapterModel(bge, str(tmp_path / "cross"), device="cpu")
    with pytest.raises(CrossModelError, match="loaded over"):  # the folder over the wrong base model
        AdapterEmbeddingModel(minilm, tmp_path / "cross")
    with pytest.raises(CrossModelError, match="documents live in"):  # documents need the index model
        AdapterEmbeddingModel(bge, tmp_path / "cross").get_text_embedding("a new chunk")
    other = pg.vector_store("eight_dims", embed_dim=8, hnsw=False)
    other.add([TextNode(id_="a", text="a chunk", embedding=[1.0] * 8)])
    with pytest.raises(CrossModelError, match="holds 8-dimensional vectors"):  # an index another model built
        check_serving(served, other)


def test_training_reads_only_the_chunks_it_needs_from_a_large_store(pg, uber, uber_nodes, bge, tmp_path):
    """The store holds the Uber chunks and 600 others; training holds the questions' chunks and a sample."""
    from adapterkit.stores.stored_vectors import id_hash
    from adapterkit.stores.training_sample import sample_stored_corpus

    texts = [f"filler chunk number {i}" for i in range(600)]
    others = [TextNode(id_=f"other-{i}", text=t, embedding=v.tolist()) for i, (t, v) in enumerate(zip(texts, embed_texts(bge, texts)))]
    store = pg.vector_store("large_store", embed_dim=384)
    store.add(uber_nodes + others)
    train, _ = _split(uber, uber.corpus)
    keep = {d for docs in train.relevant_docs.values() for d in docs}

    counter = CountingEmbedding(bge, cache=False)
    cache = EmbeddingCache(tmp_path / "cache")
    drawn = sample_stored_corpus(store, counter, keep=keep, sample=50, cache=cache, batch_size=64)
    total = len(uber_nodes) + len(others)
    assert (drawn.rows, drawn.kept, drawn.sampled) == (total, len(keep), 50) and len(drawn.corpus) == len(keep) + 50
    # the 50 smallest hashes among the chunks not kept: the same whatever the batches
    rest = sorted((n.node_id for n in uber_nodes + others if n.node_id not in keep), key=lambda i: id_hash(i, 0))
    assert list(drawn.corpus)[len(keep) :] == rest[:50]
    again = sample_stored_corpus(store, counter, keep=keep, sample=50, cache=cache, batch_size=7)
    assert list(again.corpus) == list(drawn.corpus)  # the same chunks in the same order, read in other batches
    assert counter.counts == {"text": 2 * VERIFY_ROWS, "query": 0}  # the store checks, nothing else
    counter.reset()

    engine = EmbeddingAdapterFinetuneEngine(
        EmbeddingQAFinetuneDataset(queries=train.queries, corpus=drawn.corpus, relevant_docs=train.relevant_docs),
        counter,
        cache=cache,
        epochs=1,  # no unlabeled_corpus: no memory (corpus_memory would be an option of nothing, and an error)
        model_output_path=tmp_path / "adapter",
        show_progress=False,
    )
    assert engine.groups[0].docs.shape[0] == len(keep) + 50 < total  # not every stored vector
    assert counter.counts["text"] == 0  # and none embedded: each came from the store
    engine.finetune()

    with pytest.raises(ValueError, match="1 of the .* chunks the questions name are not in the store"):
        sample_stored_corpus(store, counter, keep=keep | {"deleted-chunk"}, sample=5, cache=cache)
    twice = StoredBatch(["a", "b", "a"], ["x", "y", "z"], embed_texts(bge, ["x", "y", "z"]))
    with pytest.raises(ValueError, match="more than once"):
        sample_stored_corpus(None, counter, keep={"b"}, sample=1, cache=cache, batches=iter([twice]))


def test_a_memory_of_a_whole_store_is_built_by_streaming_and_embeds_no_chunk(pg, uber, uber_nodes, bge, tmp_path):
    import torch

    from adapterkit.embeddings import model_identity
    from adapterkit.memory.corpus_memory import CorpusMemory, MemoryWriter
    from adapterkit.memory.pg_memory import PgMemory, PgMemoryWriter
    from adapterkit.stores.store_memory import memory_from_store

    store = pg.vector_store("streamed", embed_dim=384)
    store.add(uber_nodes)
    expected = CorpusMemory.from_corpus(uber.corpus, bge, index="exact", max_keys=2)
    counter = CountingEmbedding(bge, cache=False)
    who = model_identity(bge)
    # single precision: the pull is the local memory's to the last bit (half precision is checked in test_memory_in_database)
    with PgMemoryWriter(pg.url(), "streamed_memory", 384, max_keys=2, key_model=who, chunk_model=who, half=False) as writer:
        counts = memory_from_store(store, counter, writer, max_keys=2, batch_size=7, cache=tmp_path / "cache")
    assert counts == {"chunks": len(uber.corpus), "keys": len(expected.keys)} and counter.counts == {"text": 0, "query": len(expected.keys)}
    with MemoryWriter(tmp_path / "local", 384, max_keys=2, index="exact") as local:
        memory_from_store(store, counter, local, max_keys=2, batch_size=64, cache=tmp_path / "cache")
    assert counter.counts["query"] == len(expected.keys)  # the second build found every key cached
    q = torch.as_tensor(np.asarray([bge.get_query_embedding(t) for t in list(uber.queries.values())[:20]], dtype=np.float32))
    for built in (PgMemory(pg.url(), "streamed_memory"), CorpusMemory.load(tmp_path / "local")):
        assert built.max_keys == 2 and torch.allclose(built.pull(q), expected.pull(q), atol=1e-5)

    for options, message in (
        ({"max_keys": 2}, "max_keys=2 keys per chunk, not None"),
        ({"key_model": "another"}, "records key_model"),
        ({"dim": 8}, "opened for 8"),
    ):
        with pytest.raises(ValueError, match=message):
            with PgMemoryWriter(pg.url(), "other", **{"dim": 384, **options}) as writer:  # left unfinished: never read
                memory_from_store(store, bge, writer)


def test_questions_ranked_over_a_streamed_store_score_as_over_the_whole_corpus(pg, uber, uber_nodes, bge):
    from adapterkit.stores.retrieval import evaluate_on_store

    store = pg.vector_store("ranked", embed_dim=384)
    store.add(uber_nodes)
    few = dict(list(uber.corpus.items())[:5])  # what training held: the ranking must not depend on it
    streamed = evaluate_on_store(
        EmbeddingQAFinetuneDataset(queries=uber.queries, corpus=few, relevant_docs=uber.relevant_docs), bge, store, top_k=10, batch_size=7
    )
    whole = evaluate(uber, bge, top_k=10)
    for column in ("is_hit", "mrr", "recall", "ndcg", "ap"):
        assert np.allclose(streamed[column], whole[column], atol=1e-6), column
    assert list(streamed["retrieved"]) == list(whole["retrieved"]) and list(streamed["rank"]) == list(whole["rank"])
    assert (whole["rank"] > 10).any()  # ranks past the top 10 are exact too
    # ties are ranked as evaluate ranks them: where every chunk has the same vector, each relevant one comes after all the others
    flat = pg.vector_store("flat", embed_dim=384)
    flat.add([TextNode(id_=n.node_id, text=n.text, embedding=[1.0] + [0.0] * 383) for n in uber_nodes])
    tied = evaluate_on_store(uber, bge, flat, top_k=10, batch_size=7)
    assert (tied["rank"] == len(uber_nodes)).all() and (tied["mrr"] == 0).all()
    with pytest.raises(ValueError, match="1 relevant chunk"):
        evaluate_on_store(EmbeddingQAFinetuneDataset(queries={"q": "revenue"}, corpus=few, relevant_docs={"q": ["not-stored"]}), bge, store)


def _numbered_table(pg, name, rows):
    """A LlamaIndex table of ``rows`` 4-d rows (node ids n1, n2, ...), filled by the server itself."""
    store = pg.vector_store(name, embed_dim=4, hnsw=False)
    store.add([])  # creates the table
    pg.psql(
        f"INSERT INTO data_{name} (text, metadata_, node_id, embedding) SELECT 'chunk ' || i, '{{}}', 'n' || i, "
        f"('[' || i || ',1,1,1]')::vector FROM generate_series(1, {rows}) AS i;"
    )
    return store


def test_a_read_cut_off_by_the_server_is_an_error_and_the_next_read_is_whole(pg):
    store = _numbered_table(pg, "cut_off", 300_000)  # megabytes: the server is still sending when the first batch arrives
    batches = read_stored(store, 1_000)
    assert len(next(batches).ids) == 1_000
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT node_id%';")
    with pytest.raises(RuntimeError, match="Reading .*cut_off.* failed .*the rest were not read"):
        for _ in batches:
            pass
    ids = [i for batch in read_stored(store, 50_000) for i in batch.ids]
    assert len(ids) == len(set(ids)) == 300_000


def test_a_read_sees_the_table_as_it_was_when_the_read_began(pg):
    store = _numbered_table(pg, "changing", 200_000)
    batches = read_stored(store, 1_000)
    first = next(batches)
    # another client deletes half the rows and rewrites the rest while the read is under way
    pg.psql("DELETE FROM data_changing WHERE id % 2 = 0; UPDATE data_changing SET embedding = '[0,0,0,1]';")
    rest = list(batches)
    vectors = np.concatenate([first.vectors] + [b.vectors for b in rest])
    assert len(vectors) == 200_000 and np.array_equal(vectors[:, 0], np.arange(1, 200_001))  # one snapshot, not a mix
    after = list(read_stored(store, 50_000))
    assert sum(len(b.ids) for b in after) == 100_000 and all((b.vectors == [0, 0, 0, 1]).all() for b in after)
    # the column altered to another dimension between two reads: a search with the old queries says so
    pg.psql(
        "ALTER TABLE data_changing DROP COLUMN embedding; ALTER TABLE data_changing ADD COLUMN embedding vector(2); "
        "UPDATE data_changing SET embedding = '[1,0]';"
    )
    with pytest.raises(ValueError, match="4.*2|2.*4"):
        exact_top_k(np.ones((1, 4), np.float32), read_stored(store, 50_000), 3)


def test_the_local_server_has_half_precision_vectors_and_keeps_its_folder_across_restarts(tmp_path):
    """pgvector from 0.7 (halfvec), updated in place; a folder written by one start opens with its rows at the next."""
    with LocalPostgres(tmp_path / "pg") as pg:
        pg.psql("CREATE TABLE t (e vector(3)); INSERT INTO t VALUES ('[1,2,3]');")
        out = pg.psql(
            "SELECT installed_version = default_version AS current, string_to_array(installed_version, '.')::int[] >= '{0,7}' AS halfvec "
            "FROM pg_available_extensions WHERE name = 'vector'; SELECT e::halfvec(3) AS half FROM t;"
        )
    assert re.search(r"^\s*t\s*\|\s*t\s*$", out, re.M) and "[1,2,3]" in out, out  # both true; the row reads as halfvec
    with LocalPostgres(tmp_path / "pg") as pg:  # the same folder, started again
        assert "[1,2,3]" in pg.psql("SELECT e FROM t;")
    assert (tmp_path / "pg").is_dir()  # a folder the caller named is kept
