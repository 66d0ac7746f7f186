"""The training loop: epochs of batches from a start adapter, checkpoints that resume exactly, the epoch the held-out chunks choose.

``train_pass`` runs one pass for ``EmbeddingAdapterFinetuneEngine``: it reads and writes only the run's
``RunState`` and the adapter it is given, so what a checkpoint holds is all a resumed pass needs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from adapterkit.adapters import BaseAdapter
from adapterkit.training import selection
from adapterkit.training.checkpoints import RunState, load_optimizer_state, save_checkpoint, unprefixed
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.losses import identity_penalty, start_penalty
from adapterkit.training.sampling import TrainingGroup, candidates, epoch_batches, lr_factor

logger = logging.getLogger(__name__)


def train_pass(
    model: BaseAdapter,
    start: Dict[str, torch.Tensor],
    groups: Sequence[TrainingGroup],
    rows: List[np.ndarray],
    config: FinetuneConfig,
    state: RunState,
    total: int,
    *,
    device: torch.device,
    validation_rr: Optional[Callable[[BaseAdapter], np.ndarray]],
    checkpoint_path: Optional[Path],
    near_start: bool,
    show_progress: bool,
) -> None:
    """One training pass over ``config.epochs`` from ``state`` (fresh, or read from a checkpoint).

    Args:
        model: the adapter, trained in place; it ends at the chosen (or kept) epoch's weights.
        start: the start weights every pass begins from.
        groups: the training groups (labelled pairs; pseudo-queries of a searched corpus).
        rows: per group, the query rows this pass trains on.
        config: the run's options.
        state: the pass's state (epoch, batch, step, losses, scores), updated as it goes.
        total: the optimiser steps the pass is scheduled for (the learning-rate schedule's length).
        validation_rr: per held-out query, the reciprocal rank under an adapter (None: no epoch is chosen).
        checkpoint_path: where checkpoints go every ``config.checkpoint_save_steps`` steps (None: none).
        near_start: the identity penalty pulls toward ``start`` (a cross-model map) instead of the identity.
        show_progress: a bar over the epochs.
    """
    validate = validation_rr is not None
    model = model.to(device)
    model.load_state_dict(start)
    loss_model = config.loss_class(model, scale=config.scale)
    tensors = [(torch.as_tensor(g.queries, device=device), torch.as_tensor(g.docs, device=device)) for g in groups]
    optimizer = config.optimizer_class(model.parameters(), **config.optimizer_params)
    generator = torch.Generator().manual_seed(config.seed)
    warmup = int(total * config.warmup_ratio)
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def schedule(step: int) -> None:  # the learning rate of this step: a pure function of the step, so a resumed run needs only its step
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * lr_factor(step, total, warmup)

    def step(group: TrainingGroup, batch: List[int], pair: tuple) -> float:
        queries, docs = pair
        cand, labels, mask = candidates(group, batch, config.negatives, docs.device)
        q = queries[batch]
        loss = loss_model(q, docs[cand], labels, mask)
        adapter = cast(torch.nn.Module, loss_model.adapter)  # loss_class(adapter, scale=...) keeps the adapter as .adapter
        if config.identity_reg:
            near = start_penalty(adapter, start) if near_start else identity_penalty(adapter, q)
            loss = loss + config.identity_reg * near
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), config.max_grad_norm)
        optimizer.step()
        return float(loss.item())

    best = {k: v.clone() for k, v in start.items()}
    if state.step or state.epoch:  # resuming: everything as it was at that step
        model.load_state_dict(unprefixed("model", state.tensors))
        load_optimizer_state(optimizer, state.optimizer, state.tensors)
        generator.set_state(state.tensors["generator"])
        best = unprefixed("best", state.tensors) or best
    elif validation_rr is not None:
        rr = validation_rr(model)
        state.tensors["identity_rr"] = torch.as_tensor(rr, dtype=torch.float64)
        state.best_score, state.best_epoch = selection.score_epoch(model, rr), 0
        state.val_mrr = [state.best_score]
    identity_rr = state.tensors["identity_rr"].numpy() if validate else None
    label, desc = ("Epoch", "Epoch") if state.phase == "select" else ("Refit", "Refit (every pair, up to the chosen epoch)")
    for epoch in tqdm(range(state.epoch + 1, config.epochs + 1), desc=desc, disable=not show_progress):
        epoch_start = generator.get_state()
        batches = epoch_batches(groups, rows, config.batch_size, config.shuffle, config.no_duplicates, generator)
        model.train()
        for b, (g, batch) in enumerate(batches):
            if b < state.batch:  # done before the interruption
                continue
            schedule(state.step)
            state.loss_history.append(step(groups[g], batch, tensors[g]))
            state.batch, state.step = b + 1, state.step + 1
            if checkpoint_path is not None and state.step % config.checkpoint_save_steps == 0:
                save_checkpoint(checkpoint_path / f"step_{state.step}", state, model, optimizer, epoch_start, best)
        losses = state.loss_history[len(state.loss_history) - len(batches) :] if batches else []
        state.epoch, state.batch = epoch, 0
        state.epoch_loss.append(float(np.mean(losses)) if losses else math.nan)
        finite = selection.is_finite(model)
        message = f"> [{label} {epoch}] mean loss {state.epoch_loss[-1]:.4f}"
        if state.keep_epoch == epoch:
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if validation_rr is not None:
            rr = validation_rr(model)
            score = selection.score_epoch(model, rr)
            state.val_mrr.append(score)
            message += f", held-out MRR@10 {score:.4f}"
            sizes = [len(g.val_idx) for g in groups] if config.guard else ()
            if selection.choose(score, state.best_score, rr, cast(np.ndarray, identity_rr), sizes):  # set whenever validating
                best, state.best_score, state.best_epoch = (
                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    score,
                    epoch,
                )
        if config.verbose:
            logger.info(message)
        if not finite:
            selection.diverged(epoch, validate or (state.keep_epoch is not None and state.keep_epoch < epoch), state, config)
            break
    if validate or state.keep_epoch is not None:
        model.load_state_dict(best)
    model.eval()
