"""Query adapters: small torch modules that map a frozen query embedding to a better one.

The saved format is LlamaIndex's: a folder with ``config.json`` (the constructor's keyword
arguments, from ``get_config_dict``) and the weights. adapterkit writes ``model.safetensors``
and, for LlamaIndex's ``AdapterEmbeddingModel``, the same tensors as ``pytorch_model.bin``.
Loading never unpickles arbitrary objects: safetensors first, else ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adapterkit.atomic import atomic_path
from adapterkit.errors import AdapterkitError

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "pytorch_model.bin"  # LlamaIndex's weights file


class AdapterLoadError(AdapterkitError, ValueError):
    """An adapter folder is missing, incomplete or does not match its class."""


class BaseAdapter(nn.Module):
    """Base class for query adapters.

    Subclass it and implement ``forward`` and ``get_config_dict``; ``save`` and ``load`` then work,
    provided ``cls(**get_config_dict())`` rebuilds the module.

    Example::

        class Scale(BaseAdapter):
            def __init__(self, dim: int):
                super().__init__()
                self.dim = dim
                self.scale = nn.Parameter(torch.ones(dim))

            def forward(self, embed):
                return embed * self.scale

            def get_config_dict(self):
                return {"dim": self.dim}
    """

    @abstractmethod
    def forward(self, embed: Tensor) -> Tensor:
        """Map query embeddings ``(..., in_features)`` to ``(..., out_features)``."""

    @abstractmethod
    def get_config_dict(self) -> Dict[str, Any]:
        """The constructor's keyword arguments, JSON-serialisable."""

    def save(self, output_path: str | os.PathLike) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``pytorch_model.bin`` into ``output_path``."""
        from safetensors.torch import save_file

        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # Write to temporary names, then rename: a crash never leaves a half-written adapter.
        for name, write in (
            (SAFETENSORS_NAME, lambda p: save_file(state, p)),
            (TORCH_NAME, lambda p: torch.save(state, p)),
            (CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(self.get_config_dict(), indent=2))),
        ):
            with atomic_path(out / name) as tmp:
                write(str(tmp))

    @classmethod
    def load(cls, input_path: str | os.PathLike) -> "BaseAdapter":
        """Rebuild an adapter saved by adapterkit or by LlamaIndex, as an instance of ``cls``.

        Nothing the folder names is imported or called: ``config.json`` only supplies keyword
        arguments to ``cls``, and the weights are read without unpickling (and refused unless finite). The module is first built
        on torch's ``meta`` device, so a config whose sizes do not match the weights file is refused
        before any memory is allocated for it.
        """
        folder = Path(input_path)
        config = read_config(folder)
        state = _read_state_dict(folder)
        model = _build(cls, config, folder, state)
        _load_into(model, folder, state)
        return model


def read_config(folder: Path) -> Dict[str, Any]:
    """``config.json`` of an adapter folder, checked to be an object of JSON values."""
    config_file = folder / CONFIG_NAME
    if not folder.is_dir():
        raise AdapterLoadError(
            f"Adapter folder {folder} does not exist. Pass the model_output_path used for training (it holds config.json and the weights)."
        )
    if not config_file.is_file():
        raise AdapterLoadError(
            f"{config_file} is missing: {folder} is not a saved adapter. "
            "Save one with adapter.save(path) or train with EmbeddingAdapterFinetuneEngine."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterLoadError(f"{config_file} is not valid JSON ({exc}); re-save the adapter.") from exc
    if not isinstance(config, dict):
        raise AdapterLoadError(f"{config_file} must hold a JSON object of constructor arguments.")
    return config


def _build(cls: type, config: Dict[str, Any], folder: Path, state: Dict[str, Tensor]) -> "BaseAdapter":
    """``cls(**config)``, after a ``meta``-device build has shown that its tensors fit ``state``."""
    try:
        with torch.device("meta"):
            probe = cls(**config)
    except (TypeError, ValueError, AdapterLoadError) as exc:
        raise AdapterLoadError(
            f"{folder / CONFIG_NAME} does not fit {cls.__name__}: {exc}. Pass the adapter class it was saved with (adapter_cls=...)."
        ) from exc
    except Exception as exc:  # a user class whose constructor cannot run on the meta device: build it for real
        if ADAPTER_CLASSES.get(cls.__name__) is cls:  # adapterkit's own classes always can: the sizes are wrong
            raise AdapterLoadError(f"{folder / CONFIG_NAME} does not describe a {cls.__name__} ({exc}); re-save the adapter.") from None
        probe = None
    if probe is not None:
        expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            raise AdapterLoadError(
                f"Weights in {folder} do not match {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())}): "
                f"{_shape_difference(expected, found)}. Pass the adapter class it was saved with (adapter_cls=...)."
            )
    try:
        return cls(**config)
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise AdapterLoadError(f"{folder / CONFIG_NAME} does not fit {cls.__name__}: {exc}.") from exc


def _shape_difference(expected: Dict[str, tuple], found: Dict[str, tuple]) -> str:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        return f"missing {missing}, unexpected {unexpected}"
    return ", ".join(f"{k}: {found[k]} in the file, {expected[k]} for the class" for k in expected if expected[k] != found[k])


def _read_state_dict(folder: Path) -> Dict[str, Tensor]:
    """The folder's weights as a dict of finite tensors: ``model.safetensors``, else ``pytorch_model.bin``."""
    safetensors_file, torch_file = folder / SAFETENSORS_NAME, folder / TORCH_NAME
    if safetensors_file.is_file():
        path = safetensors_file
    elif torch_file.is_file():
        path = torch_file
    else:
        raise AdapterLoadError(f"No weights in {folder}: expected {SAFETENSORS_NAME} or {TORCH_NAME} beside {CONFIG_NAME}.")
    try:
        if path == safetensors_file:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc):  # torch's refusal of a pickle that names callables: its advice to lift it is not ours
            found = re.search(r"GLOBAL (\S+)", str(exc))
            raise AdapterLoadError(
                f"Could not read adapter weights in {path}: it is not a plain tensor file (its pickle asks for "
                f"{found.group(1) if found else 'objects other than tensors'}), and adapterkit never unpickles code. "
                f"Re-save the adapter with adapterkit (adapter.save(path)), or give the folder a {SAFETENSORS_NAME}."
            ) from exc
        raise AdapterLoadError(f"Could not read adapter weights in {path}: {exc}. Re-save the adapter.") from exc
    _check_tensors(state, path)
    return state


def _check_tensors(state: Any, path: Path) -> None:
    """Refuse a weights file that is not a dict of tensors, or holds a NaN or infinite value."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise AdapterLoadError(f"{path} does not hold a dict of named tensors; re-save the adapter.")
    for name, tensor in state.items():
        # a NaN serves an all-NaN query vector, an inf a NaN or zero one: refuse them here, naming the tensor
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AdapterLoadError(
                f"Tensor {name!r} in {path} holds NaN or infinite values (its weights are not finite, e.g. training diverged): "
                "retrain the adapter (a lower learning rate) or restore the folder."
            )


def _load_into(model: BaseAdapter, folder: Path, state: Optional[Dict[str, Tensor]] = None) -> None:
    try:
        model.load_state_dict(_read_state_dict(folder) if state is None else state, strict=True)
    except RuntimeError as exc:
        raise AdapterLoadError(
            f"Weights in {folder} do not match {type(model).__name__}{tuple(model.get_config_dict().values())}: "
            f"{exc}. Pass the adapter class it was saved with (adapter_cls=...)."
        ) from exc


def check_adapter_dim(adapter: nn.Module, dim: int, out_dim: Optional[int] = None) -> int:
    """Run the adapter on one ``dim``-vector; return its output dimension or say what does not fit.

    ``out_dim``: the documents' dimension (default ``dim``; another one when the documents were
    embedded by another model, see ``cross_model``)."""
    out_dim = dim if out_dim is None else out_dim
    param = next(adapter.parameters(), None)
    probe = torch.zeros(1, dim, device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad():
            out = adapter(probe)
    except RuntimeError as exc:
        raise ValueError(
            f"The adapter does not accept {dim}-dimensional embeddings ({exc}). Build it for the base "
            f"model's dimension, e.g. LinearLayer({dim}, {out_dim}), or leave adapter_model=None."
        ) from exc
    if out.shape[-1] != out_dim:
        raise ValueError(
            f"The adapter maps {dim}-dimensional queries to {out.shape[-1]} dimensions, but the documents "
            f"are {out_dim}-dimensional; set out_features={out_dim}."
        )
    return int(out.shape[-1])


class LinearLayer(BaseAdapter):
    """A linear map ``W q (+ b)``, initialised to the identity so training starts from the base model.

    Args:
        in_features: query embedding dimension.
        out_features: output dimension (equal to ``in_features`` for the identity start).
        bias: learn a bias ``b`` as well.

    Example::

        adapter = LinearLayer(384, 384)
        adapter(torch.randn(2, 384)).shape  # (2, 384)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(out_features, in_features))
            if bias:
                self.linear.bias.zero_()

    def forward(self, embed: Tensor) -> Tensor:
        return self.linear(embed)

    def get_config_dict(self) -> Dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias}


_ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
}


class TwoLayerNN(BaseAdapter):
    """Two-layer MLP ``linear2(act(linear1(q)))``, optionally added to ``q`` with a learned weight.

    With ``add_residual=True`` the output is ``residual_weight * mlp(q) + q`` and ``residual_weight``
    starts at 0, so training starts from the base model. Layout and config keys match LlamaIndex's
    ``TwoLayerNN`` (both layers always carry a bias there; ``bias`` is kept for config compatibility).

    Args:
        in_features: query embedding dimension.
        hidden_features: width of the hidden layer.
        out_features: output dimension (must equal ``in_features`` with the residual).
        bias: kept for LlamaIndex config compatibility.
        activation_fn_str: one of ``relu``, ``sigmoid``, ``tanh``, ``leaky_relu``.
        add_residual: add the input back, scaled MLP output on top.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        bias: bool = False,
        activation_fn_str: str = "relu",
        add_residual: bool = False,
    ) -> None:
        super().__init__()
        if activation_fn_str not in _ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation_fn_str!r}; choose one of {sorted(_ACTIVATIONS)}.")
        if add_residual and in_features != out_features:
            raise ValueError(f"add_residual needs in_features == out_features, got {in_features} and {out_features}.")
        self.in_features, self.hidden_features, self.out_features = in_features, hidden_features, out_features
        self.bias, self.activation_fn_str, self.add_residual = bias, activation_fn_str, add_residual
        self.linear1 = nn.Linear(in_features, hidden_features, bias=True)
        self.linear2 = nn.Linear(hidden_features, out_features, bias=True)
        self.residual_weight = nn.Parameter(torch.zeros(1))

    def forward(self, embed: Tensor) -> Tensor:
        out = self.linear2(_ACTIVATIONS[self.activation_fn_str](self.linear1(embed)))
        return self.residual_weight * out + embed if self.add_residual else out

    def get_config_dict(self) -> Dict[str, Any]:
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_fn_str": self.activation_fn_str,
            "add_residual": self.add_residual,
        }


class LowRankLinear(BaseAdapter):
    """``q + U (V q)`` with ``U`` starting at 0: an identity-start linear map of rank ``rank``.

    Fewer parameters than a full ``LinearLayer`` (``2 * rank * dim`` against ``dim**2``), so it
    overfits less on small training sets.

    Args:
        in_features: embedding dimension (input and output).
        rank: rank of the learned correction.
    """

    def __init__(self, in_features: int, rank: int = 16) -> None:
        super().__init__()
        self.in_features, self.rank = in_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, in_features, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, embed: Tensor) -> Tensor:
        return embed + self.up(self.down(embed))

    def get_config_dict(self) -> Dict[str, Any]:
        return {"in_features": self.in_features, "rank": self.rank}


class OrthogonalLinear(BaseAdapter):
    """A rotation ``Q q`` (``Q`` orthogonal, starting at the identity): it keeps the geometry of the
    query space and cannot collapse it, only turn it toward the documents.

    Args:
        in_features: embedding dimension (input and output).
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        # Q = matrix_exp(A - A^T) is orthogonal for any A; A = 0 gives the identity.
        self.skew = nn.Parameter(torch.zeros(in_features, in_features))

    def forward(self, embed: Tensor) -> Tensor:
        a = torch.triu(self.skew, diagonal=1)
        return embed @ torch.linalg.matrix_exp(a - a.T).T

    def get_config_dict(self) -> Dict[str, Any]:
        return {"in_features": self.in_features}


# adapterkit's own adapter classes, the only ones read off a folder. Loading never imports what a file names:
# any other class must be passed by the caller (``adapter_cls=``), and only a ``BaseAdapter`` subclass is accepted.
ADAPTER_CLASSES: Dict[str, type] = {c.__name__: c for c in (LinearLayer, TwoLayerNN, LowRankLinear, OrthogonalLinear)}


ADAPTER_KINDS = ("linear", "two_layer", "low_rank", "orthogonal")


def make_adapter(kind: str, dim: int, hidden_features: int = 1024, rank: int = 16, seed: Optional[int] = 0) -> BaseAdapter:
    """An adapter by name, each starting at (or at zero distance from) the identity.

    Args:
        kind: ``"linear"`` (``LinearLayer(dim, dim)``), ``"two_layer"`` (``TwoLayerNN(dim,
            hidden_features, dim, add_residual=True)``), ``"low_rank"`` (``LowRankLinear(dim, rank)``)
            or ``"orthogonal"`` (``OrthogonalLinear(dim)``).
        dim: the base model's embedding dimension.
        seed: seeds the random initial weights (two-layer, low-rank), without touching torch's global
            generator; None draws from it.
    """
    builders = {
        "linear": lambda: LinearLayer(dim, dim, bias=False),
        "two_layer": lambda: TwoLayerNN(dim, hidden_features, dim, bias=True, add_residual=True),
        "low_rank": lambda: LowRankLinear(dim, rank=rank),
        "orthogonal": lambda: OrthogonalLinear(dim),
    }
    if kind not in builders:
        raise ValueError(f"Unknown adapter kind {kind!r}; choose one of {ADAPTER_KINDS}.")
    if seed is None:
        return builders[kind]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[kind]()


def check_adapter_cls(cls: Any) -> Type[BaseAdapter]:
    """``cls`` if it is a ``BaseAdapter`` subclass, else a ``TypeError`` that says what to pass."""
    if not (isinstance(cls, type) and issubclass(cls, BaseAdapter)):
        raise TypeError(f"adapter_cls must be a subclass of adapterkit.BaseAdapter, got {cls!r}.")
    return cls


def infer_adapter_cls(folder: str | os.PathLike) -> Type[BaseAdapter]:
    """LinearLayer or TwoLayerNN, read off ``config.json``; other classes must be passed explicitly."""
    keys = set(read_config(Path(folder)))
    if "hidden_features" in keys:
        return TwoLayerNN
    if keys <= {"in_features", "out_features", "bias"}:
        return LinearLayer
    raise AdapterLoadError(
        f"{Path(folder) / CONFIG_NAME} has keys {sorted(keys)}, which belong to a custom adapter: pass adapter_cls=YourAdapter."
    )


def load_adapter(folder: str | os.PathLike, adapter_cls: Optional[type] = None) -> BaseAdapter:
    """The adapter saved in ``folder``: the one loading entry point of adapterkit.

    Args:
        folder: written by ``BaseAdapter.save``, the engine, or LlamaIndex.
        adapter_cls: its class, for a custom adapter (a ``BaseAdapter`` subclass); default:
            adapterkit's class read off ``config.json``. Nothing the folder names is imported.
    """
    cls = check_adapter_cls(adapter_cls) if adapter_cls is not None else infer_adapter_cls(folder)
    return cls.load(folder)


def infer_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when present, else Apple MPS, else CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
