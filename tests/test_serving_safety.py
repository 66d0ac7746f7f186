"""What a model folder serves is finite, over the base model it was made for, and read without running code."""

from __future__ import annotations

import json
import os
import pickle
import re

import numpy as np
import pytest
import torch

from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine, LinearLayer, resolve_embed_model
from adapterkit.adapters import AdapterLoadError, load_adapter, make_adapter
from adapterkit.cache import NonFiniteEmbeddingError
from adapterkit.embeddings import model_identity
from adapterkit.memory.corpus_memory import MEMORY_DIR, CorpusMemory, MemoryLoadError
from adapterkit.stores.counting import CountingEmbedding

CORPUS = {
    "uber": "Uber Technologies connects riders with drivers in many cities around the world. Gross bookings grew in 2021.",
    "lyft": "Lyft reported revenue and rides for the year in its annual report. Active riders increased after the pandemic.",
}
QUERY = "How did Uber's gross bookings change in 2021?"


@pytest.fixture(scope="module")
def minilm():
    """The real offline all-MiniLM-L6-v2: 384-dimensional, like bge-small, and another model."""
    return resolve_embed_model("minilm")


def _scaled(tmp_path, kind: str, factor: float):
    folder = tmp_path / kind
    adapter = make_adapter(kind, 384)
    with torch.no_grad():
        if kind == "two_layer":
            adapter.residual_weight.fill_(1.0)  # else its MLP starts switched off
        for param in adapter.parameters():
            param.mul_(factor)
    adapter.save(folder)
    return folder


def test_a_nan_weight_is_refused_at_load_naming_file_and_tensor(tmp_path):
    adapter = LinearLayer(384, 384)
    with torch.no_grad():
        adapter.linear.weight[3, 7] = float("nan")
    adapter.save(tmp_path / "nan")
    with pytest.raises(AdapterLoadError, match=r"'linear\.weight'.*model\.safetensors.*not finite"):
        load_adapter(tmp_path / "nan")
    (tmp_path / "nan" / "model.safetensors").unlink()  # LlamaIndex's weights file alone: the same check
    with pytest.raises(AdapterLoadError, match=r"'linear\.weight'.*pytorch_model\.bin"):
        load_adapter(tmp_path / "nan")


@pytest.mark.parametrize("kind", ["linear", "two_layer"])
def test_weights_times_1e38_raise_at_serving_naming_the_adapter(tmp_path, bge, kind):
    """Finite weights whose output overflows: a zero (linear) or infinite (two_layer) vector is never served."""
    folder = _scaled(tmp_path, kind, 1e38)
    load_adapter(folder)  # every weight is finite
    model = AdapterEmbeddingModel(bge, folder, cache=False)
    with pytest.raises(NonFiniteEmbeddingError, match=rf"The adapter of {re.escape(str(folder))}.*base model's vectors are finite"):
        model.get_query_embedding(QUERY)
    assert len(model.get_text_embedding("a document")) == 384  # documents never pass through the adapter


def test_a_memory_that_overflows_is_named_at_serving(tmp_path, bge):
    LinearLayer(384, 384).save(tmp_path / "plain")
    memory = CorpusMemory.from_corpus(CORPUS, bge)
    memory.weight = 1e300  # set past every check: serving still refuses what it makes
    model = AdapterEmbeddingModel(bge, tmp_path / "plain", memory=memory, cache=False)
    with pytest.raises(NonFiniteEmbeddingError, match=r"corpus memories .*adapter's output is fine"):
        model.get_query_embedding(QUERY)


def _saved_memory(tmp_path, bge):
    folder = tmp_path / "adapter"
    LinearLayer(384, 384).save(folder)
    CorpusMemory.from_corpus(CORPUS, bge).save(folder / MEMORY_DIR / "sentences")
    return folder, folder / MEMORY_DIR / "sentences"


@pytest.mark.parametrize("array", ["chunks", "keys"])
def test_a_memory_with_a_nan_vector_is_refused_at_load(tmp_path, bge, array):
    folder, memory = _saved_memory(tmp_path, bge)
    AdapterEmbeddingModel(bge, folder)  # intact, it serves
    values = np.load(memory / f"{array}.npy")
    values[-1, 5] = np.nan
    np.save(memory / f"{array}.npy", values)
    with pytest.raises(MemoryLoadError, match=rf"{array}\.npy.*NaN or infinite.*row {len(values) - 1}"):
        CorpusMemory.load(memory)
    with pytest.raises(MemoryLoadError, match=rf"{array}\.npy"):
        AdapterEmbeddingModel(bge, folder)  # the memory beside the adapter is read, and refused


def test_memory_arrays_are_checked_in_blocks():
    from adapterkit.memory.keys import first_non_finite_row

    values = np.ones((1000, 4), dtype=np.float32)
    assert first_non_finite_row(values, block_bytes=64) is None
    values[777, 2] = np.inf
    assert first_non_finite_row(values, block_bytes=64) == 777 == first_non_finite_row(values)


@pytest.mark.parametrize(
    "field, value", [("weight", 1e300), ("temperature", 1e300), ("weight", float("inf")), ("temperature", float("inf"))]
)
def test_a_memory_json_pull_out_of_range_is_refused(tmp_path, bge, field, value):
    _, memory = _saved_memory(tmp_path, bge)
    meta = json.loads((memory / "memory.json").read_text())
    (memory / "memory.json").write_text(json.dumps({**meta, field: value}))  # json writes NaN and Infinity as Python reads them
    with pytest.raises(MemoryLoadError, match=r"memory\.json"):
        CorpusMemory.load(memory)


def test_constructor_and_with_pull_refuse_a_pull_that_is_not_finite(bge):
    for weight in (float("inf"), 1e300):
        with pytest.raises(ValueError, match="weight"):
            CorpusMemory(8, weight=weight)
    memory = CorpusMemory.from_corpus(CORPUS, bge)
    for weight, temperature in ((float("nan"), None), (1e300, None), (0.25, float("inf")), (0.25, 1e300)):
        with pytest.raises(ValueError, match="weight"):
            memory.with_pull(weight, temperature)
    assert memory.with_pull(0.5, 20.0).weight == 0.5  # a sane pull is still a pull


def test_a_folder_trained_over_bge_is_refused_over_minilm(tmp_path, train_small, bge, minilm):
    folder = tmp_path / "out"
    engine = EmbeddingAdapterFinetuneEngine(
        train_small, bge, epochs=1, batch_size=8, val_fraction=0.0, guard=False, refit=False, model_output_path=folder, show_progress=False
    )
    engine.finetune()
    record = json.loads((folder / "base_model.json").read_text())
    assert record == {"model_identity": model_identity(bge), "model_name": record["model_name"], "dim": 384}
    assert "bge" in record["model_name"].lower()
    with pytest.raises(AdapterLoadError) as refused:
        AdapterEmbeddingModel(minilm, folder)
    message = str(refused.value)
    for part in (model_identity(bge), model_identity(minilm), record["model_name"], minilm.model_name, "check_base_model=False"):
        assert part in message
    served = AdapterEmbeddingModel(minilm, folder, check_base_model=False).get_query_embedding(QUERY)
    assert len(served) == 384 and np.isfinite(served).all()
    AdapterEmbeddingModel(CountingEmbedding(bge), folder)  # a wrapper of the same model is the same model
    (folder / "base_model.json").unlink()  # as LlamaIndex or older adapterkit save a folder: served as before, unchecked
    assert len(AdapterEmbeddingModel(minilm, folder).get_query_embedding(QUERY)) == 384


def test_a_memory_of_another_model_is_refused(tmp_path, bge, minilm):
    folder, _ = _saved_memory(tmp_path, bge)  # no base_model.json: the memory's own record decides
    with pytest.raises(AdapterLoadError, match=rf"keys of {model_identity(bge)}.*check_base_model=False"):
        AdapterEmbeddingModel(minilm, folder)
    assert len(AdapterEmbeddingModel(minilm, folder, check_base_model=False).get_query_embedding(QUERY)) == 384
    assert len(AdapterEmbeddingModel(minilm, folder, memory=False).get_query_embedding(QUERY)) == 384


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '{"model_identity": 5, "model_name": "x", "dim": 384}',
        '{"model_identity": "a", "model_name": "x", "dim": true}',
        "not json",
        '"a string"',
    ],
)
def test_a_damaged_base_model_json_is_refused(tmp_path, bge, text):
    LinearLayer(384, 384).save(tmp_path / "m")
    (tmp_path / "m" / "base_model.json").write_text(text)
    with pytest.raises(AdapterLoadError, match=r"base_model\.json"):
        AdapterEmbeddingModel(bge, tmp_path / "m")


class _RunsACommand:
    """Pickles as a call of os.system: what a hostile weights file holds."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_hostile_pickle_is_refused_without_torchs_advice(tmp_path, writer):
    folder, marker = tmp_path / "hostile", tmp_path / "pwned"
    LinearLayer(4, 4).save(folder)
    (folder / "model.safetensors").unlink()
    payload = {"linear.weight": _RunsACommand(marker)}  # only pickled (written as bytes), never unpickled here
    if writer == "pickle":
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, folder / "pytorch_model.bin")
    with pytest.raises(AdapterLoadError) as refused:
        load_adapter(folder)
    message = str(refused.value)
    assert "not a plain tensor file" in message and "never unpickles code" in message and "model.safetensors" in message
    assert "weights_only" not in message and "likely succeed" not in message
    assert refused.value.__cause__ is not None  # torch's own error stays chained
    assert not marker.exists()
