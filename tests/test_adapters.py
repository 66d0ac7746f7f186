import json

import pytest
import torch
from helpers import Scale

from adapterkit.adapters import (
    AdapterLoadError,
    LinearLayer,
    LowRankLinear,
    OrthogonalLinear,
    TwoLayerNN,
    check_adapter_dim,
)
from adapterkit.memory.corpus_memory import MemoryLoadError


def test_linear_starts_at_identity():
    x = torch.randn(4, 8)
    assert torch.allclose(LinearLayer(8, 8)(x), x)
    assert torch.allclose(LinearLayer(8, 8, bias=True)(x), x)


def test_low_rank_and_orthogonal_start_at_identity_and_stay_in_shape():
    x = torch.randn(3, 8)
    low, rot = LowRankLinear(8, rank=2), OrthogonalLinear(8)
    assert torch.allclose(low(x), x) and torch.allclose(rot(x), x, atol=1e-6)
    with torch.no_grad():
        rot.skew.normal_()
        low.up.weight.normal_()
    assert torch.allclose(rot(x).norm(dim=1), x.norm(dim=1), atol=1e-4)  # a rotation keeps lengths
    assert torch.linalg.matrix_rank(low(x) - x) <= 2


def test_two_layer_residual_starts_at_identity():
    x = torch.randn(3, 8)
    assert torch.allclose(TwoLayerNN(8, 16, 8, add_residual=True)(x), x)
    assert not torch.allclose(TwoLayerNN(8, 16, 8)(x), x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearLayer(8, 8, bias=True),
        lambda: TwoLayerNN(8, 16, 8, add_residual=True),
        lambda: Scale(8),
        lambda: LowRankLinear(8, 2),
        lambda: OrthogonalLinear(8),
    ],
)
def test_save_load_roundtrip(tmp_path, make):
    torch.manual_seed(0)
    adapter = make()
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p))
    adapter.save(tmp_path / "a")
    assert {"config.json", "model.safetensors", "pytorch_model.bin"} <= {p.name for p in (tmp_path / "a").iterdir()}
    loaded = type(adapter).load(tmp_path / "a")
    x = torch.randn(5, 8)
    assert torch.equal(adapter(x), loaded(x))


def test_llamaindex_loads_ours_and_we_load_llamaindex(tmp_path):
    from llama_index.embeddings.adapter.utils import LinearLayer as LILinear
    from llama_index.embeddings.adapter.utils import TwoLayerNN as LITwoLayer

    ours = LinearLayer(8, 8)
    with torch.no_grad():
        ours.linear.weight.add_(0.1)
    ours.save(tmp_path / "ours")
    theirs = LILinear.load(str(tmp_path / "ours"))
    x = torch.randn(2, 8)
    assert torch.allclose(theirs(x), ours(x))

    li = LITwoLayer(8, 16, 8, add_residual=True)
    with torch.no_grad():
        li.residual_weight.fill_(0.5)
    li.save(str(tmp_path / "theirs"))  # LlamaIndex writes only config.json + pytorch_model.bin
    assert not (tmp_path / "theirs" / "model.safetensors").exists()
    loaded = TwoLayerNN.load(tmp_path / "theirs")
    assert torch.allclose(loaded(x), li(x))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(AdapterLoadError, match="does not exist"):
        LinearLayer.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match="config.json is missing"):
        LinearLayer.load(tmp_path / "empty")
    LinearLayer(4, 4).save(tmp_path / "ok")
    (tmp_path / "ok" / "config.json").write_text("{not json")
    with pytest.raises(AdapterLoadError, match="not valid JSON"):
        LinearLayer.load(tmp_path / "ok")
    LinearLayer(4, 4).save(tmp_path / "trunc")
    (tmp_path / "trunc" / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(AdapterLoadError, match="Could not read adapter weights"):
        LinearLayer.load(tmp_path / "trunc")
    TwoLayerNN(4, 8, 4).save(tmp_path / "two")
    with pytest.raises(AdapterLoadError, match="adapter_cls"):
        LinearLayer.load(tmp_path / "two")
    LinearLayer(4, 4).save(tmp_path / "noweights")
    for name in ("model.safetensors", "pytorch_model.bin"):
        (tmp_path / "noweights" / name).unlink()
    with pytest.raises(AdapterLoadError, match="No weights"):
        LinearLayer.load(tmp_path / "noweights")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_never_unpickles_objects(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"in_features": 2, "out_features": 2}))
    torch.save({"linear.weight": torch.eye(2), "x": _Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(AdapterLoadError, match="Could not read"):
        LinearLayer.load(folder)


def test_dimension_mismatch_is_explained():
    with pytest.raises(ValueError, match="does not accept 384-dimensional"):
        check_adapter_dim(LinearLayer(768, 768), 384)
    with pytest.raises(ValueError, match="out_features=8"):
        check_adapter_dim(TwoLayerNN(8, 4, 6), 8)


def _exploit_folders(root, target):
    """Adapter folders whose config.json names code to run, each with the command as a config value."""
    memory = {"keys": 1, "chunks": 1, "dim": 2, "weight": 0.25, "temperature": 100.0}
    configs = {
        "os_system": {"inner": {"class": "os:system", "config": {"command": f"touch {target}"}}, **memory},
        "subprocess_run": {"inner": {"class": "subprocess:run", "config": {"args": ["touch", str(target)]}}, **memory},
        "builtin_exec": {"inner": {"class": "builtins:exec", "config": {"source": f"open({str(target)!r}, 'w')"}}, **memory},
        "plain": {"in_features": 2, "out_features": 2, "class": "subprocess:run", "args": ["touch", str(target)]},
    }
    folders = []
    for name, config in configs.items():
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "memory.json").write_text(json.dumps({**config, "index": config.get("class", "os:system"), "top_k": 1}))
        folders.append(folder)
    beside = root / "memory_beside"  # a loadable adapter with a memory folder that names code
    LinearLayer(384, 384).save(beside)
    (beside / "memory").mkdir()
    (beside / "memory" / "memory.json").write_text(
        json.dumps({"dim": 2, "weight": 0.2, "temperature": 1.0, "top_k": 1, "index": "subprocess:run", "args": ["touch", str(target)]})
    )
    return folders + [beside]


def test_loading_never_runs_what_a_folder_names(tmp_path, train_small, bge):
    """Every loading entry point refuses a folder naming code (os.system, subprocess.run, exec); nothing runs."""
    from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine
    from adapterkit.adapters import infer_adapter_cls, load_adapter
    from adapterkit.memory.corpus_memory import CorpusMemory

    target = tmp_path / "pwned"
    entry_points = {
        "load_adapter": lambda f: load_adapter(f),
        "CorpusMemory.load": lambda f: CorpusMemory.load(f),
        "AdapterEmbeddingModel with memory": lambda f: AdapterEmbeddingModel(bge, f, memory=f),
        "LinearLayer.load": lambda f: LinearLayer.load(f),
        "infer_adapter_cls": lambda f: infer_adapter_cls(f).load(f),
        "AdapterEmbeddingModel": lambda f: AdapterEmbeddingModel(bge, f),
        "from_model_path": lambda f: EmbeddingAdapterFinetuneEngine.from_model_path(train_small, bge, f, show_progress=False),
        "custom class passed": lambda f: load_adapter(f, adapter_cls=Scale) and CorpusMemory.load(f / "memory"),
    }
    for folder in _exploit_folders(tmp_path, target):
        for name, load in entry_points.items():
            try:
                load(folder)  # the loadable adapter beside a bad memory loads; everything else is refused
            except (AdapterLoadError, MemoryLoadError, TypeError):
                pass
            assert not target.exists(), f"{name} ran the command named in {folder.name}"
    with pytest.raises(MemoryLoadError):
        AdapterEmbeddingModel(bge, tmp_path / "memory_beside")  # the memory beside the adapter is read, and refused
    for name in ("os_system", "subprocess_run", "builtin_exec", "plain"):
        with pytest.raises(AdapterLoadError):
            load_adapter(tmp_path / name)
        with pytest.raises(MemoryLoadError):
            CorpusMemory.load(tmp_path / name)
    with pytest.raises(TypeError, match="subclass of adapterkit.BaseAdapter"):
        load_adapter(tmp_path / "plain", adapter_cls=print)


def test_config_sizes_are_checked_before_anything_is_allocated(tmp_path):
    LinearLayer(4, 4).save(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"in_features": 4_000_000, "out_features": 4_000_000}))
    with pytest.raises(AdapterLoadError, match=r"linear.weight: \(4, 4\) in the file"):
        LinearLayer.load(tmp_path / "a")  # 64 TB if it were built before checking
