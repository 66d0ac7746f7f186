"""The walkthrough's published Lyft questions and chunks, embedded by the default model, shipped with the package.

``adapterkit fit`` trains on those questions as its labelled side (the setting the public suite
measures). Their vectors for the offline default model ship in ``data/published_vectors.npz`` and are put
into the embedding cache before a fit, so a cold fit embeds only your own texts. The file is read with
``allow_pickle=False`` (data only); rows are placed only for the exact model identity they were made with.
``python -m adapterkit.pipeline.published_vectors`` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adapterkit.cache import EmbeddingCache

FILE = Path(__file__).parents[1] / "data" / "published_vectors.npz"  # package data (pyproject.toml)


def seed_cache(cache: EmbeddingCache, identity: str) -> int:
    """Put the shipped vectors into ``cache`` when they were made by the model ``identity``; returns rows added."""
    if not FILE.is_file():
        return 0
    with np.load(FILE, allow_pickle=False) as data:
        if str(data["identity"]) != identity:
            return 0
        keys = [bytes(k) for k in data["keys"]]
        vectors = data["vectors"]
    have = cache.get_many(identity, keys)
    missing = {k: v for k, v in zip(keys, vectors) if k not in have and np.isfinite(v).all()}
    if missing:
        cache.put_many(identity, missing)
    return len(missing)


def build(model: Any = "default") -> Path:
    """Embed the published questions (as queries) and their chunks (as texts) with ``model`` and write ``FILE``."""
    from adapterkit.cache import embed_texts
    from adapterkit.data.qa_sets import load_qa_datasets
    from adapterkit.embeddings import model_identity, resolve_embed_model

    model = resolve_embed_model(model)
    train = load_qa_datasets("published")[0]
    parts = [("query", list(train.queries.values())), ("text", list(train.corpus.values()))]
    keys = np.array([np.frombuffer(EmbeddingCache.key(kind, t), dtype=np.uint8) for kind, texts in parts for t in texts])
    vectors = np.concatenate([embed_texts(model, texts, kind) for kind, texts in parts]).astype(np.float32)
    np.savez_compressed(FILE, identity=np.array(model_identity(model)), keys=keys, vectors=vectors)
    return FILE


if __name__ == "__main__":
    print(build())
