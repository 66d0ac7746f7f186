"""CorpusMemory: a query-side memory beside the adapter, keyed by chunk id, that follows the index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from adapterkit import AdapterEmbeddingModel, LinearLayer, evaluate
from adapterkit.data.documents import chunk_sentences
from adapterkit.memory.corpus_memory import CorpusMemory, MemoryLoadError


def _memory(weight=0.5, temperature=1000.0, top_k=4):
    torch.manual_seed(0)
    keys, chunks = 2.0 * torch.eye(8)[:5], torch.randn(3, 8)
    memory = CorpusMemory(8, weight=weight, temperature=temperature, top_k=top_k)
    for chunk, rows in (("a", [0, 1]), ("b", [2]), ("c", [3, 4])):
        memory.add(chunk, chunks[ord(chunk) - ord("a")].numpy(), keys[rows].numpy())
    return memory, keys, chunks


def test_a_query_like_a_key_is_pulled_toward_its_chunk():
    memory, keys, chunks = _memory()
    q = keys[2:3] * 3.0  # key 2 (chunk "b"), at any length
    adapted = torch.randn(1, 8)
    out = memory.apply(adapted, q)
    expected = nn.functional.normalize(adapted, dim=-1) + 0.5 * nn.functional.normalize(chunks[1:2], dim=-1)
    assert torch.allclose(out, expected, atol=1e-5)
    # Two keys of one chunk share their weight: halfway between keys 3 and 4 (both chunk "c"), the pull is c's.
    between = (nn.functional.normalize(keys[3], dim=0) + nn.functional.normalize(keys[4], dim=0))[None]
    assert torch.allclose(memory.pull(between), 0.5 * nn.functional.normalize(chunks[2:3], dim=-1), atol=1e-3)
    assert torch.equal(CorpusMemory(8, weight=0.0).pull(q), torch.zeros(1, 8))


def test_top_k_lookup_matches_the_softmax_over_every_key():
    rng = np.random.default_rng(0)
    memory = CorpusMemory(16, top_k=32, temperature=100.0)
    for i in range(200):
        memory.add(f"c{i}", rng.normal(size=16), rng.normal(size=(4, 16)))
    q = torch.as_tensor(rng.normal(size=(5, 16)), dtype=torch.float32)
    keys, chunks = torch.as_tensor(memory.keys), torch.as_tensor(memory.chunks)
    attention = torch.softmax(100.0 * nn.functional.normalize(q, dim=-1) @ keys.T, dim=-1)
    full = memory.weight * (attention @ chunks[torch.as_tensor(memory.owner)])
    assert torch.allclose(memory.pull(q), full, atol=1e-4)


def test_add_remove_and_update_follow_the_corpus(bge, tmp_path):
    corpus = {
        "a": "Uber operates a platform connecting riders and drivers in many cities. Delivery revenue grew in 2021.",
        "b": "Lyft reported that active riders increased during the second half of the year.",
        "tiny": "Too short.",
    }
    memory = CorpusMemory.from_corpus(corpus, bge)
    assert memory.chunk_ids == ["a", "b", "tiny"]  # "tiny" has no sentence of 6+ words: held, with no key
    assert len(memory.keys) == len(chunk_sentences(corpus["a"])) + 1
    changed = dict(
        corpus,
        b="Lyft reported that active riders fell sharply during the first months of the pandemic.",
        c="Gross bookings of the mobility segment rose in the fourth quarter of 2021.",
    )
    del changed["a"]
    counts = memory.update(changed, bge)
    assert counts == {"added": 1, "changed": 1, "removed": 1, "unchanged": 1}
    assert sorted(memory.chunk_ids) == ["b", "c", "tiny"] and sorted(set(memory.owner)) == [memory.chunk_ids.index(c) for c in ("b", "c")]
    assert memory.update(changed, bge) == {"added": 0, "changed": 0, "removed": 0, "unchanged": 3}
    memory.save(tmp_path / "m")
    loaded = CorpusMemory.load(tmp_path / "m")
    q = torch.as_tensor(np.asarray([bge.get_query_embedding("How did Lyft's riders change?")]))
    assert torch.equal(loaded.pull(q), memory.pull(q)) and loaded.chunk_ids == memory.chunk_ids
    assert memory.remove(["b", "nope"]) == 1 and sorted(memory.chunk_ids) == ["c", "tiny"]


def test_a_damaged_memory_folder_is_refused(tmp_path):
    memory, _, _ = _memory()
    memory.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "memory.json").read_text())
    (tmp_path / "m" / "memory.json").write_text(json.dumps({**meta, "chunk_ids": ["a", "b"]}))  # one id short
    with pytest.raises(MemoryLoadError, match="do not fit"):
        CorpusMemory.load(tmp_path / "m")
    with pytest.raises(MemoryLoadError, match="rebuild"):
        CorpusMemory.load(tmp_path / "nowhere")


def test_adapter_model_composes_the_saved_memory(tmp_path, val_small, bge):
    LinearLayer(384, 384).save(tmp_path / "adapter")
    plain = evaluate(val_small, AdapterEmbeddingModel(bge, tmp_path / "adapter"))
    CorpusMemory.from_corpus(val_small.corpus, bge).save(tmp_path / "adapter" / "memory")
    with_memory = AdapterEmbeddingModel(bge, tmp_path / "adapter")  # found beside the adapter
    assert len(with_memory.memories) == 1 and AdapterEmbeddingModel(bge, tmp_path / "adapter", memory=False).memories == []
    tuned = evaluate(val_small, with_memory)
    assert not tuned["mrr"].equals(plain["mrr"])


def test_adapted_queries_are_unit_length_unless_asked_otherwise(tmp_path, bge):
    adapter = LinearLayer(384, 384)
    with torch.no_grad():
        adapter.linear.weight.mul_(3.0)  # an adapter that scales its output
    adapter.save(tmp_path / "a")
    questions = ["What was Uber's revenue in 2021?", "Who are Lyft's competitors?"]
    unit = AdapterEmbeddingModel(bge, tmp_path / "a").embed(questions, "query")
    raw = AdapterEmbeddingModel(bge, tmp_path / "a", normalize=False).embed(questions, "query")
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 3.0, atol=1e-4)


def test_an_ivf_index_finds_what_exact_search_finds():
    from adapterkit.memory.keys import ExactIndex, IVFIndex, make_index

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 32))
    keys = centers[rng.integers(0, 50, size=20_000)] + 0.3 * rng.normal(size=(20_000, 32))
    keys = (keys / np.linalg.norm(keys, axis=1, keepdims=True)).astype(np.float32)
    queries = keys[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, exact = ExactIndex(keys).search(queries, 10)
    sims, approx = IVFIndex(keys, nlist=64, nprobe=16).search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9 and (np.diff(sims, axis=1) <= 1e-6).all()
    assert isinstance(make_index(keys, "auto"), ExactIndex) and isinstance(make_index(keys, "ivf", nlist=16), IVFIndex)
    memory = CorpusMemory(32, index="ivf", top_k=8)
    memory.add_chunks([f"c{i}" for i in range(5000)], keys[:5000], keys[5000:], rng.integers(0, 5000, size=15_000))
    exact_memory = CorpusMemory(32, index="exact", top_k=8)
    exact_memory.add_chunks(memory.chunk_ids, memory.chunks, memory.keys, memory.owner)
    q = torch.as_tensor(queries)
    cosine = nn.functional.cosine_similarity(memory.pull(q), exact_memory.pull(q), dim=-1)
    assert cosine.mean() > 0.95


def test_a_memory_written_in_batches_loads_as_one(tmp_path):
    from adapterkit.memory.corpus_memory import MemoryWriter

    memory, _, _ = _memory()
    with MemoryWriter(tmp_path / "big", 8, weight=0.5, temperature=1000.0, top_k=4) as writer:
        writer.add(memory.chunk_ids[:2], memory.chunks[:2], memory.keys[:3], memory.owner[:3])
        writer.add(memory.chunk_ids[2:], memory.chunks[2:], memory.keys[3:], memory.owner[3:] - 2)
    loaded = CorpusMemory.load(tmp_path / "big")
    assert loaded.chunk_ids == memory.chunk_ids and isinstance(loaded.keys, np.memmap)
    q = torch.as_tensor(memory.keys[[0, 2, 4]] * 2.0)
    assert torch.allclose(loaded.pull(q), memory.pull(q), atol=1e-6)


def test_a_cap_on_keys_per_chunk_keeps_a_fixed_sample_of_its_sentences(bge, tmp_path, val_full):
    text = " ".join(f"Sentence number {i} of this chunk has more than six words." for i in range(10))
    every = chunk_sentences(text)
    two = chunk_sentences(text, most=2)
    assert len(every) == 10 and len(two) == 2 and set(two) <= set(every)
    assert two == [s for s in every if s in two]  # in text order
    # the choice depends on the sentences alone: in another order, the same two are kept
    assert chunk_sentences(" ".join(reversed(every)), most=2) == list(reversed(two))
    assert chunk_sentences("Too short. Also short.", most=2) == [] and chunk_sentences(text, most=20) == every

    corpus = {c: val_full.corpus[c] for c in list(val_full.corpus)[:6]}
    full = CorpusMemory.from_corpus(corpus, bge)
    capped = CorpusMemory.from_corpus(corpus, bge, max_keys=2)
    counts = np.bincount(capped.owner, minlength=len(capped.chunk_ids))
    assert counts.max() <= 2 and len(capped.keys) < len(full.keys)
    assert np.array_equal(counts, [min(2, len(chunk_sentences(corpus[c]))) for c in capped.chunk_ids])
    # the kept keys are those sentences' vectors
    first = capped.chunk_ids[0]
    expected = np.asarray([bge.get_query_embedding(s) for s in chunk_sentences(corpus[first], most=2)], dtype=np.float32)
    assert np.allclose(capped.keys[capped.owner == 0], expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    capped.save(tmp_path / "m")
    loaded = CorpusMemory.load(tmp_path / "m")
    assert loaded.max_keys == 2
    changed = dict(corpus, extra=text)
    loaded.update(changed, bge)  # an update keeps to the saved cap
    assert np.bincount(loaded.owner).max() <= 2 and (np.asarray(loaded.owner) == loaded.chunk_ids.index("extra")).sum() == 2
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_keys"):
            CorpusMemory(8, max_keys=bad)
        with pytest.raises(ValueError, match="most is the number of sentences"):
            chunk_sentences(text, most=bad)
    with pytest.raises(ValueError, match="at most max_keys=2"):  # a capped memory refuses more keys however they come
        loaded.add("more", np.ones(384), np.ones((3, 384)))
