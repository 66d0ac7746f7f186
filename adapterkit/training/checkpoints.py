"""Checkpoints that resume a training run exactly: ``step_N/`` folders with the adapter and its run state.

Each ``step_N`` folder holds the adapter as ``BaseAdapter.save`` writes it (LlamaIndex loads it), plus
``training_state.safetensors`` (weights, optimiser moments, the batch generator's state, the best
epoch so far) and ``training_state.json`` (step, epoch, schedule, history, and a fingerprint of the
run's data and options). Reading one never unpickles: tensors come from safetensors, the rest is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from adapterkit.atomic import atomic_path, write_text

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
_STEP = re.compile(r"^step_(\d+)$")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class RunState:
    """Where a run is: enough to continue it and end with the same weights as an uninterrupted run.

    ``phase`` is ``"select"`` (held-out chunks pick the epoch) or ``"refit"`` (every pair, ending at
    ``keep_epoch``). ``epoch`` epochs are finished and ``batch`` batches of the next one are done;
    ``generator`` is the batch generator's state when that epoch started, so its batches can be drawn
    again.
    """

    fingerprint: str
    phase: str = "select"
    epoch: int = 0
    batch: int = 0
    step: int = 0
    keep_epoch: Optional[int] = None
    best_epoch: Optional[int] = None
    best_score: float = float("-inf")
    val_mrr: List[float] = field(default_factory=list)
    epoch_loss: List[float] = field(default_factory=list)
    loss_history: List[float] = field(default_factory=list)
    optimizer: Dict[str, Any] = field(default_factory=dict)  # param_groups and non-tensor state
    tensors: Dict[str, Tensor] = field(default_factory=dict)  # "model.*", "best.*", "optimizer.*", "generator", "identity_rr"


def optimizer_state(optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """The optimiser's state split into JSON values and tensors."""
    sd = optimizer.state_dict()
    plain: Dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    tensors = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().clone()
            else:
                plain["state"].setdefault(str(idx), {})[name] = value
    return plain, tensors


def load_optimizer_state(optimizer: torch.optim.Optimizer, plain: Dict[str, Any], tensors: Dict[str, Tensor]) -> None:
    state: Dict[int, Dict[str, Any]] = {int(k): dict(v) for k, v in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


def prefixed(prefix: str, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone().contiguous() for k, v in state.items()}


def unprefixed(prefix: str, tensors: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_state(folder: PathLike, state: RunState) -> None:
    """Write ``state`` into ``folder`` (the adapter is already there); atomic per file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    plain = {k: v for k, v in asdict(state).items() if k != "tensors"}
    plain["best_score"] = None if not np.isfinite(plain["best_score"]) else plain["best_score"]
    with atomic_path(folder / STATE_TENSORS) as tmp:
        save_file({k: v.contiguous() for k, v in state.tensors.items()}, str(tmp))
    write_text(folder / STATE_JSON, json.dumps(plain, allow_nan=True))


def load_state(folder: PathLike) -> Optional[RunState]:
    """The run state in ``folder``, or None when it has none or it cannot be read whole."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        plain = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS), device="cpu")
        plain["best_score"] = float("-inf") if plain.get("best_score") is None else float(plain["best_score"])
        return RunState(**plain, tensors=tensors)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError):  # a kill mid-write, or not ours
        return None


def checkpoints(folder: PathLike) -> List[Path]:
    """``step_N`` checkpoint folders under ``folder``, in step order."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))] if folder.is_dir() else []
    return [p for _, p in sorted(found)]


def middle_checkpoint(folder: PathLike) -> Optional[Path]:
    """The checkpoint closest to the middle of training (the walkthrough evaluates one such), or None."""
    found = checkpoints(folder)
    return found[(len(found) - 1) // 2] if found else None


def latest_state(folder: Optional[PathLike], fingerprint: str) -> Optional[RunState]:
    """The newest readable run state under ``folder`` whose fingerprint is ``fingerprint``."""
    if folder is None:
        return None
    for path in reversed(checkpoints(folder)):
        state = load_state(path)
        if state is not None and state.fingerprint == fingerprint:
            return state
    return None


def remove_run_checkpoints(folder: Optional[PathLike], phase: Optional[str] = None) -> None:
    """Delete the ``step_N`` folders that hold a run state (of ``phase``, or any): only folders this
    module wrote, so a user's own folders survive."""
    for path in checkpoints(folder) if folder is not None else []:
        if (path / STATE_JSON).is_file():
            state = load_state(path)
            if phase is None or state is None or state.phase == phase:
                shutil.rmtree(path, ignore_errors=True)


def run_fingerprint(options: Dict[str, Any], model: torch.nn.Module, start: Dict[str, Tensor], groups: List[Any]) -> str:
    """What a resumable checkpoint must match: the run's options, the adapter's class, its start weights
    and every training group's arrays (vectors, positives, the held-out split, mined negatives)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in sorted(start.items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    for g in groups:
        for array in (g.queries, g.docs, g.positives, g.train_idx, g.val_idx, g.hard if g.hard is not None else np.zeros(0)):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_checkpoint(
    folder: Path, state: RunState, model: Any, optimizer: torch.optim.Optimizer, epoch_start: Tensor, best: Dict[str, Tensor]
) -> None:
    """``folder`` (a ``step_N``): the adapter as ``save`` writes it, and the run state to resume from."""
    model.save(folder)
    state.optimizer, optimizer_tensors = optimizer_state(optimizer)
    state.tensors = {
        **{k: v for k, v in state.tensors.items() if k == "identity_rr"},
        **prefixed("model", model.state_dict()),
        **prefixed("best", best),
        **optimizer_tensors,
        "generator": epoch_start.clone(),
    }
    save_state(folder, state)
