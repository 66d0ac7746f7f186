"""The published questions' shipped vectors: made by today's default model, complete, and what it computes."""

import numpy as np

from adapterkit.cache import EmbeddingCache, embed_texts
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.embeddings import model_identity
from adapterkit.pipeline.published_vectors import FILE, seed_cache


def test_the_shipped_vectors_cover_the_published_questions_for_the_default_model(tmp_path, bge):
    with np.load(FILE, allow_pickle=False) as data:
        assert str(data["identity"]) == model_identity(bge)  # else a fit would embed them again: rebuild the file
    cache = EmbeddingCache(tmp_path / "cache")
    train = load_qa_datasets("published")[0]
    distinct = len(set(train.queries.values())) + len(set(train.corpus.values()))  # a text asked twice is one vector
    assert seed_cache(cache, model_identity(bge)) == distinct
    assert seed_cache(cache, model_identity(bge)) == 0  # nothing twice
    assert seed_cache(cache, "another-model") == 0  # never under another model's name
    texts = list(train.queries.values())[:3]
    shipped = embed_texts(bge, texts, "query", cache=cache)  # served from the seeded cache
    fresh = embed_texts(bge, texts, "query", cache=EmbeddingCache(tmp_path / "fresh"))
    assert np.allclose(shipped, fresh, atol=1e-4)  # the same vectors up to float rounding on another CPU
