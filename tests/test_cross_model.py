"""Maps between two models' spaces fitted on a paired sample (the start of a cross-model adapter)."""

from typing import Any, List

import numpy as np
import pytest
import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from adapterkit.cache import embed_texts
from adapterkit.cross_model import SampleTooSmallError, fit_linear_map, minimum_pairs
from adapterkit.metrics import unit_rows


def test_procrustes_recovers_a_known_rotation_exactly():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    new = unit_rows(rng.normal(size=(60, 24)))
    old = new @ rotation.T  # the old model's vector of each text is the new one rotated
    layer = fit_linear_map(new, old)
    assert np.allclose(layer.linear.weight.detach().numpy(), rotation, atol=1e-5)
    mapped = layer(torch.as_tensor(new, dtype=torch.float32)).detach().numpy()
    assert np.allclose(mapped, old, atol=1e-5)


def test_least_squares_maps_between_different_dimensions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(16, 32))
    new = unit_rows(rng.normal(size=(400, 32)))
    old = unit_rows(new @ truth.T)
    layer = fit_linear_map(new, old, ridge=1e-6)
    assert (layer.in_features, layer.out_features) == (32, 16)
    mapped = unit_rows(layer(torch.as_tensor(new, dtype=torch.float32)).detach().numpy().astype(np.float64))
    assert (mapped * old).sum(1).min() > 0.99  # cosine to the old model's own vectors


def test_a_sample_too_small_names_the_minimum():
    new, old = np.ones((10, 32)), np.ones((10, 16))
    with pytest.raises(SampleTooSmallError, match=f"at least {minimum_pairs(32)}"):
        fit_linear_map(new, old)


def test_bad_samples_are_errors():
    rng = np.random.default_rng(2)
    new, old = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    old[3, 1] = np.nan
    with pytest.raises(ValueError, match="old model's vector of sample row 3"):
        fit_linear_map(new, old)
    with pytest.raises(ValueError, match="same n paired rows"):
        fit_linear_map(new, old[:30])
    with pytest.raises(ValueError, match="method='lstsq'"):
        fit_linear_map(rng.normal(size=(40, 8)), rng.normal(size=(40, 4)), method="procrustes")


def test_the_sample_is_a_count_or_a_share_and_anything_else_is_an_error():
    from adapterkit.cross_model import choose_sample, sample_count
    from adapterkit.training.config import FinetuneConfig

    assert [sample_count(s, 395) for s in (0, 40, 0.1, 1.0, 10_000)] == [0, 40, 40, 395, 395]
    ids = [f"c{i}" for i in range(50)]
    picked = choose_sample(ids, 0.2, seed=3)
    assert len(picked) == 10 and picked == sorted(picked, key=ids.index) and picked == choose_sample(ids, 0.2, seed=3)
    for bad in (-1, 1.5, True, "10%"):
        with pytest.raises(ValueError, match="map_sample must be a count"):
            FinetuneConfig().updated(map_sample=bad)


def test_a_damaged_identity_file_and_a_wrong_index_dimension_are_named(tmp_path):
    from adapterkit.cross_model import CROSS_MODEL_FILE, CrossModelError, check_index_dim, read_identity

    assert read_identity(tmp_path) is None  # a folder of one model
    (tmp_path / CROSS_MODEL_FILE).write_text("{not json")
    with pytest.raises(CrossModelError, match="not valid JSON"):
        read_identity(tmp_path)
    (tmp_path / CROSS_MODEL_FILE).write_text('{"query_model": "A:1", "index_dim": "384"}')
    with pytest.raises(CrossModelError, match="index_dim"):
        read_identity(tmp_path)
    record = {"query_model_name": "bge", "index_model_name": "MiniLM", "index_dim": 384}
    with pytest.raises(CrossModelError, match="holds 768-dimensional vectors: serve it against an index built by MiniLM"):
        check_index_dim(record, 384, 768, "the vector store")
    with pytest.raises(CrossModelError, match="index_model="):
        check_index_dim(None, 384, 768)
    check_index_dim(record, 384, 384)  # equal: nothing to say


@pytest.mark.integration
def test_options_that_mean_nothing_across_models_are_errors(train_small, bge):
    from adapterkit import EmbeddingAdapterFinetuneEngine, LinearLayer

    for options, message in [
        ({"hard_negatives": 2, "negatives": "in_batch"}, "hard_negatives"),
        ({"adapter_model": LinearLayer(384, 384)}, "leave adapter_model=None"),
        ({"bias": True}, "leave bias=False"),
    ]:
        with pytest.raises(ValueError, match=message):
            EmbeddingAdapterFinetuneEngine(train_small, bge, index_model="minilm", show_progress=False, **options)
    with pytest.raises(ValueError, match="give index_model too"):  # an option that could not take effect
        EmbeddingAdapterFinetuneEngine(train_small, bge, map_sample=0.5, show_progress=False)
    with pytest.raises(ValueError, match="starts at the map fitted"):
        EmbeddingAdapterFinetuneEngine.from_model_path(train_small, bge, "any-folder", index_model="minilm")


def test_a_plain_run_into_a_cross_model_folder_drops_its_record(tmp_path, train_small, bge):
    from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine
    from adapterkit.cross_model import CROSS_MODEL_FILE

    (tmp_path / CROSS_MODEL_FILE).write_text("{}")  # left by an earlier cross-model run into the same folder
    EmbeddingAdapterFinetuneEngine(train_small, bge, epochs=1, model_output_path=tmp_path, show_progress=False).finetune()
    assert not (tmp_path / CROSS_MODEL_FILE).exists()
    assert len(AdapterEmbeddingModel(bge, tmp_path).get_text_embedding("a chunk")) == 384  # an ordinary folder again


class FirstCoordinates(BaseEmbedding):
    """A smaller model made from a real one: the first ``k`` coordinates of bge's vectors, at unit length
    (what a Matryoshka-trained model serves when truncated). Its vectors go through the shared cache."""

    k: int = 192
    _inner: Any = PrivateAttr()

    def __init__(self, inner: BaseEmbedding, **kwargs: Any) -> None:
        super().__init__(model_name=f"first coordinates of {inner.model_name}", **kwargs)
        self._inner = inner

    def _cut(self, texts: List[str], kind: str) -> List[List[float]]:
        return unit_rows(embed_texts(self._inner, texts, kind)[:, : self.k]).tolist()

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._cut(texts, "text")

    def _get_query_embeddings(self, queries: List[str]) -> List[List[float]]:
        return self._cut(queries, "query")

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._cut([text], "text")[0]

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._cut([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


@pytest.mark.integration  # embeds a whole slice with a real model: about a minute from an empty cache
def test_an_index_of_another_dimension_is_handled_memories_included(tmp_path, val_full, bge):
    from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine
    from conftest import take

    uber = take(val_full, 140)  # the chunks (and so the bge vectors) of the PostgreSQL cross-model test
    train = uber.restrict(list(uber.corpus)[:100])
    old = FirstCoordinates(bge)  # a 192-d index; bge's 384-d queries are mapped into it
    engine = EmbeddingAdapterFinetuneEngine(
        train,
        bge,
        index_model=old,
        unlabeled_corpus=uber.corpus,
        epochs=2,
        map_sample=1.0,
        model_output_path=tmp_path / "cross",
        show_progress=False,
    )
    assert (engine.map_info["method"], engine.map_info["query_dim"], engine.map_info["index_dim"]) == ("lstsq", 384, 192)
    engine.finetune()
    memory = engine.memories["sentences"]
    assert (memory.key_dim, memory.dim) == (384, 192)  # keys: bge queries; pulled toward the index's 192-d chunks
    served = engine.get_finetuned_model()
    question = next(iter(uber.queries.values()))
    vector = np.asarray(served.get_query_embedding(question))
    reloaded = AdapterEmbeddingModel(bge, tmp_path / "cross", index_model=old)
    assert vector.shape == (192,) and np.allclose(reloaded.get_query_embedding(question), vector, atol=1e-6)
    assert reloaded.memories[0].key_dim == 384 and len(served.get_text_embedding("a new chunk")) == 192
    assert not (
        tmp_path / "cross" / "pytorch_model.bin"
    ).exists()  # LlamaIndex's loader finds no weights (it would embed documents with bge)
    # the memory follows the index with the index's model; the query model alone would put 384-d vectors among 192-d ones
    saved = reloaded.memories[0]
    grown = dict(list(uber.corpus.items())[:3], new="Gross bookings of the mobility segment rose in the fourth quarter of 2021.")
    with pytest.raises(ValueError, match="chunk vectors are vectors of .*index_model"):
        saved.update(grown, bge)
    with pytest.raises(ValueError, match="keys are vectors of"):
        saved.update(grown, old, index_model=old)
    saved.update(grown, bge, index_model=old)
    assert saved.chunks[saved.chunk_ids.index("new")].tolist() == pytest.approx(old.get_text_embedding(grown["new"]), abs=1e-6)

    from adapterkit.pipeline.evaluate_folder import evaluate_model_folder

    questions = tmp_path / "questions.json"
    uber.restrict(list(uber.corpus)[100:]).save_json(questions)
    with pytest.raises(ValueError, match="--index-model"):  # scoring it needs the index's model
        evaluate_model_folder(tmp_path / "cross", questions, embed_model=bge, show_progress=False)
    table, _ = evaluate_model_folder(tmp_path / "cross", questions, embed_model=bge, index_model=old, show_progress=False)
    assert list(table["model"]) == ["base", "adapter"]
