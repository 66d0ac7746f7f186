import numpy as np
import pytest

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
    assert cache.stats == {"hits": 4, "misses": 6}


class NaNModel(OnnxBGEEmbedding):
    def _embed(self, texts):
        out = np.asarray(super()._embed(texts))
        out[-1, 0] = np.nan
        return out.tolist()


def test_non_finite_embedding_is_refused(tmp_path):
    with pytest.raises(NonFiniteEmbeddingError, match="non-finite"):
        embed_texts(NaNModel(), ["a real sentence", "another one"], "text", cache=EmbeddingCache(tmp_path))
