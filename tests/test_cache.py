from typing import Optional

import numpy as np
import pytest
from llama_index.core.embeddings import MockEmbedding

from adapterkit.cache import EmbeddingCache, NonFiniteEmbeddingError, embed_texts
from adapterkit.embeddings import OnnxBGEEmbedding, model_identity


class Counting(OnnxBGEEmbedding):
    """The real model, counting how many texts reach it and failing on demand."""

    calls: int = 0
    fail_after: int = -1

    def _embed(self, texts):
        if 0 <= self.fail_after <= self.calls:
            raise KeyboardInterrupt("simulated crash")
        self.calls += len(texts)
        return super()._embed(texts)


TEXTS = ["Lyft operates a ridesharing marketplace.", "Uber Eats grew in 2021.", "Risk factors include regulation."] * 3


def test_each_text_embedded_once_ever(tmp_path):
    model = Counting()
    cache = EmbeddingCache(tmp_path)
    first = embed_texts(model, TEXTS, "text", cache=cache)
    assert model.calls == 3  # duplicates embedded once
    second = embed_texts(Counting(), TEXTS, "text", cache=EmbeddingCache(tmp_path))  # a new process, same folder
    np.testing.assert_array_equal(first, second)
    assert first.shape == (9, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # Queries carry the instruction, so they are different entries.
    q = embed_texts(model, TEXTS[:1], "query", cache=cache)
    assert model.calls == 4 and not np.allclose(q[0], first[0])


def test_identity_tracks_settings():
    a, b = OnnxBGEEmbedding(), OnnxBGEEmbedding(max_length=128)
    assert model_identity(a) != model_identity(b)
    assert model_identity(a) == model_identity(OnnxBGEEmbedding())
    assert model_identity(a) != model_identity(OnnxBGEEmbedding(query_instruction=""))


def test_interrupted_run_keeps_finished_batches(tmp_path):
    texts = [f"Chunk number {i} of the 10-K filing." for i in range(10)]
    crashing = Counting(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(crashing, texts, "text", cache=EmbeddingCache(tmp_path), batch_size=2)
    resumed = Counting()
    cache = EmbeddingCache(tmp_path)
    embed_texts(resumed, texts, "text", cache=cache, batch_size=2)
    assert resumed.calls == 6  # the 4 finished before the crash were not embedded again
    assert cache.stats == {"hits": 4, "misses": 6, "bad_rows": 0}


class Recording(OnnxBGEEmbedding):
    """The real model, recording the token counts of each call's texts."""

    seen: list = []

    def _embed(self, texts):
        self.seen.append(self.token_lengths(texts))
        return super()._embed(texts)


def test_texts_reach_the_model_shortest_first_and_their_vectors_do_not_change(tmp_path):
    texts = [
        "A long sentence about the ridesharing marketplace and its regulation in many cities.",
        "Short one.",
        "A medium sentence about Uber Eats.",
        "Tiny.",
        "Another fairly long sentence about risk factors in the 10-K.",
    ]
    model = Recording(seen=[])
    vectors = embed_texts(model, texts, "text", cache=EmbeddingCache(tmp_path), batch_size=2)
    counts = [n for call in model.seen for n in call]
    assert counts == sorted(counts) and len(model.seen) == 3  # 2 texts per call, shortest first
    one_by_one = np.stack([embed_texts(Counting(), [t], "text", cache=EmbeddingCache(tmp_path / "single"))[0] for t in texts])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-6)  # rows come back in the caller's order


class NaNModel(OnnxBGEEmbedding):
    def _embed(self, texts):
        out = np.asarray(super()._embed(texts))
        out[-1, 0] = np.nan
        return out.tolist()


def test_non_finite_embedding_is_refused(tmp_path):
    with pytest.raises(NonFiniteEmbeddingError, match="non-finite"):
        embed_texts(NaNModel(), ["a real sentence", "another one"], "text", cache=EmbeddingCache(tmp_path))


def test_a_corrupt_cache_file_names_itself_and_the_fix(tmp_path):
    from adapterkit.cache import EmbeddingCacheError

    (tmp_path / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmbeddingCacheError, match=r"embeddings.sqlite cannot be read .*Delete that file"):
        EmbeddingCache(tmp_path)


def test_a_read_only_cache_serves_what_it_holds(tmp_path, monkeypatch):
    import os

    embed_texts(Counting(), TEXTS, "text", cache=EmbeddingCache(tmp_path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode, **kw))
    cache = EmbeddingCache(tmp_path)  # as a folder the user cannot write to
    assert cache.read_only
    model = Counting(fail_after=0)  # any call to the model would raise
    np.testing.assert_array_equal(
        embed_texts(model, TEXTS, "text", cache=cache), embed_texts(Counting(), TEXTS, "text", cache=EmbeddingCache(tmp_path))
    )
    before = len(cache)
    fresh = embed_texts(Counting(), ["A text the cache does not hold."], "text", cache=cache)
    assert fresh.shape == (1, 384) and len(cache) == before  # embedded, not stored


def test_damaged_rows_are_embedded_again(tmp_path):
    cache = EmbeddingCache(tmp_path)
    model = Counting()
    good = embed_texts(model, TEXTS[:3], "text", cache=cache)
    ident = model_identity(model)
    keys = [EmbeddingCache.key("text", t) for t in TEXTS[:3]]
    broken = good[1].copy()
    broken[5] = np.nan
    cache._db.executemany(
        "UPDATE emb SET vec=? WHERE model=? AND key=?",
        [(b"\x01\x02\x03", ident, keys[0]), (broken.tobytes(), ident, keys[1]), (good[2][:100].tobytes(), ident, keys[2])],
    )
    cache._db.commit()
    again = Counting()
    fresh = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(embed_texts(again, TEXTS[:3], "text", cache=fresh), good)
    assert again.calls == 3 and fresh.stats["bad_rows"] == 3


def test_ragged_vectors_and_broken_unicode_are_explained(tmp_path):
    class Ragged(OnnxBGEEmbedding):
        def _embed(self, texts):
            return [[0.1] * (384 - i) for i in range(len(texts))]

    with pytest.raises(ValueError, match="different lengths"):
        embed_texts(Ragged(), ["one text", "two texts"], "text", cache=EmbeddingCache(tmp_path))
    with pytest.raises(ValueError, match="lone surrogate"):
        embed_texts(Counting(), ["broken \ud800 text"], "text", cache=EmbeddingCache(tmp_path))


def test_a_local_model_folder_is_keyed_by_its_contents_not_its_path(tmp_path):
    class LocalModel(MockEmbedding):
        model_name: str = ""

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    first = model_identity(LocalModel(embed_dim=4, model_name=str(folder)))
    assert model_identity(LocalModel(embed_dim=4, model_name=str(folder))) == first
    (folder / "model.safetensors").write_bytes(b"weights v2")  # new weights, same path
    assert model_identity(LocalModel(embed_dim=4, model_name=str(folder))) != first
    # the same weights installed elsewhere (another virtualenv) are the same model
    moved = tmp_path / "elsewhere" / "model"
    moved.mkdir(parents=True)
    (moved / "model.safetensors").write_bytes(b"weights v2")
    assert model_identity(LocalModel(embed_dim=4, model_name=str(moved))) == model_identity(LocalModel(embed_dim=4, model_name=str(folder)))


class Configurable(MockEmbedding):
    """A LlamaIndex embedding with the kinds of settings real ones have."""

    tokenizer_name: str = "bert-base-uncased"
    max_length: int = 512
    dimensions: Optional[int] = None
    model_path: Optional[str] = None


@pytest.mark.parametrize("setting", [{"tokenizer_name": "roberta-base"}, {"max_length": 128}, {"dimensions": 256}])
def test_every_setting_that_can_change_vectors_changes_the_identity(setting):
    base = model_identity(Configurable(embed_dim=4))
    assert model_identity(Configurable(embed_dim=4, **setting)) != base
    # Speed settings do not: the same vectors come back whatever the batch size or worker count.
    assert model_identity(Configurable(embed_dim=4, embed_batch_size=7, num_workers=3)) == base


def test_openai_identity_keeps_the_dimensions_and_never_the_key():
    from llama_index.embeddings.openai import OpenAIEmbedding

    a = OpenAIEmbedding(model="text-embedding-3-small", api_key="sk-one", dimensions=256)
    assert model_identity(a) == model_identity(
        OpenAIEmbedding(model="text-embedding-3-small", api_key="sk-two", dimensions=256, max_retries=9)
    )
    assert model_identity(a) != model_identity(OpenAIEmbedding(model="text-embedding-3-small", api_key="sk-one", dimensions=512))


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    from adapterkit.atomic import atomic_path, write_text

    target = tmp_path / "config.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]
