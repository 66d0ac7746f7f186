"""Interrupted training resumes exactly or restarts cleanly; a diverged run is never kept; the mask and the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapterkit import EmbeddingAdapterFinetuneEngine
from adapterkit.training.checkpoints import STATE_JSON, checkpoints
from adapterkit.training.engine import TrainingDivergedError


def interrupting() -> type:
    """A new AdamW subclass (one per test, so no count leaks between tests) that raises KeyboardInterrupt
    (what Ctrl-C does) on optimiser step ``at``, counting steps across the runs of that test in ``steps``."""

    class Interrupting(torch.optim.AdamW):
        at = None
        steps = 0

        def step(self, closure=None):
            type(self).steps += 1
            if type(self).at is not None and type(self).steps == type(self).at:
                raise KeyboardInterrupt
            return super().step(closure)

    return Interrupting


def poisoning() -> type:
    """A new AdamW subclass that writes NaN into the weights from optimiser step ``at`` on."""

    class Poisoning(torch.optim.AdamW):
        at = 10**9
        steps = 0

        def step(self, closure=None):
            out = super().step(closure)
            type(self).steps += 1
            if type(self).steps >= type(self).at:
                with torch.no_grad():
                    for group in self.param_groups:
                        for p in group["params"]:
                            p.fill_(float("nan"))
            return out

    return Poisoning


ARGS = dict(epochs=4, batch_size=8, optimizer_params={"lr": 1e-3}, val_fraction=0.3, seed=3, checkpoint_save_steps=2, show_progress=False)


def _run(train, bge, folder, optimizer_class, interrupt_at=None, checkpoints_dir=None):
    optimizer_class.at, optimizer_class.steps = interrupt_at, 0
    args = {k: v for k, v in ARGS.items() if checkpoints_dir or k != "checkpoint_save_steps"}  # steps need a checkpoint folder
    return EmbeddingAdapterFinetuneEngine(
        train, bge, model_output_path=folder, model_checkpoint_path=checkpoints_dir, optimizer_class=optimizer_class, **args
    )


@pytest.mark.parametrize("interrupt_at", [7, 41])  # mid-way through selection; in the refit (selection takes 24 steps)
def test_interrupted_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path, train_small, bge, interrupt_at):
    Interrupting = interrupting()
    whole = _run(train_small, bge, tmp_path / "whole", Interrupting, checkpoints_dir=tmp_path / "whole_ckpt")
    whole.finetune()
    refit_steps = len(whole.loss_history)
    selection_steps = Interrupting.steps - refit_steps
    assert whole.best_epoch and selection_steps < interrupt_at < Interrupting.steps or interrupt_at < selection_steps

    engine = _run(train_small, bge, tmp_path / "out", Interrupting, interrupt_at=interrupt_at, checkpoints_dir=tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        engine.finetune()
    assert torch.equal(engine.model.linear.weight.cpu(), torch.eye(384))  # back at the start, not half-trained
    newest = checkpoints(tmp_path / "ckpt")[-1]
    assert (newest / STATE_JSON).is_file()
    resumed_from = int(newest.name.split("_")[1])
    Interrupting.at, Interrupting.steps = None, 0
    engine.finetune()  # resumes from the newest checkpoint of this run
    left = selection_steps + refit_steps - resumed_from if interrupt_at <= selection_steps else refit_steps - resumed_from
    assert Interrupting.steps == left  # only the steps after the checkpoint were taken again
    assert torch.equal(engine.model.linear.weight.cpu(), whole.model.linear.weight.cpu())
    assert engine.best_epoch == whole.best_epoch and engine.val_mrr == whole.val_mrr
    assert engine.loss_history == whole.loss_history

    fresh = _run(train_small, bge, tmp_path / "new", Interrupting, checkpoints_dir=tmp_path / "ckpt")
    fresh.finetune(epochs=3)  # other options: another run, so the checkpoints are not resumed but replaced
    assert len(fresh.epoch_loss) == 3


def test_without_checkpoints_an_interrupted_run_restarts_from_the_start(tmp_path, train_small, bge):
    Interrupting = interrupting()
    whole = _run(train_small, bge, tmp_path / "whole", Interrupting)
    whole.finetune()
    engine = _run(train_small, bge, tmp_path / "out", Interrupting, interrupt_at=5)
    with pytest.raises(KeyboardInterrupt):
        engine.finetune()
    assert torch.equal(engine.model.linear.weight.cpu(), torch.eye(384))
    Interrupting.at, Interrupting.steps = None, 0
    engine.finetune()
    assert engine.best_epoch == whole.best_epoch  # a whole run from the start: best_epoch 0 would mean a mixed start
    assert torch.equal(engine.model.linear.weight.cpu(), whole.model.linear.weight.cpu())


def test_a_nan_epoch_is_never_chosen_and_without_selection_is_an_error(tmp_path, train_small, bge):
    Poisoning = poisoning()
    args = dict(epochs=4, batch_size=8, optimizer_params={"lr": 1e-3}, seed=3, optimizer_class=Poisoning, show_progress=False)
    Poisoning.at, Poisoning.steps = 17, 0  # from epoch 3 on (6 steps an epoch with 30% held out)
    engine = EmbeddingAdapterFinetuneEngine(train_small, bge, val_fraction=0.3, refit=False, model_output_path=tmp_path / "sel", **args)
    engine.finetune()
    assert engine.best_epoch in (0, 1, 2) and engine.val_mrr[3] == -np.inf
    assert torch.isfinite(engine.model.linear.weight).all()
    Poisoning.at, Poisoning.steps = 5, 0
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate"):
        EmbeddingAdapterFinetuneEngine(
            train_small, bge, val_fraction=0.0, guard=False, refit=False, model_output_path=tmp_path / "all", **args
        ).finetune()
    for bad in ({"scale": float("nan")}, {"optimizer_params": {"lr": float("nan")}}, {"checkpoint_save_steps": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EmbeddingAdapterFinetuneEngine(train_small, bge, show_progress=False, **bad)


def test_a_hard_negative_equal_to_the_querys_positive_is_masked():
    from adapterkit.training.sampling import TrainingGroup, candidates

    group = TrainingGroup(
        "train",
        np.zeros((3, 2), np.float32),
        np.array([0, 1, 2]),
        np.zeros((4, 2), np.float32),
        other_relevant=[[3], [], []],
        hard=np.array([[1], [0], [3]]),
    )
    cand, labels, mask = candidates(group, [0, 1, 2], "in_batch", torch.device("cpu"))
    assert cand.tolist() == [0, 1, 2, 1, 0, 3] and labels.tolist() == [0, 1, 2]
    expected = np.zeros((3, 6), dtype=bool)
    expected[0, 4] = True  # query 0's positive again, as query 1's hard negative: not a negative of query 0
    expected[0, 5] = True  # query 0's other relevant chunk
    expected[1, 3] = True  # query 1's positive again, as query 0's hard negative
    assert mask.numpy().tolist() == expected.tolist()


def test_the_finetuned_model_stays_on_the_training_device(tmp_path, train_small, bge, monkeypatch):
    engine = EmbeddingAdapterFinetuneEngine(
        train_small, bge, epochs=1, device="cpu", model_output_path=tmp_path / "out", show_progress=False
    )
    engine.finetune()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with a GPU
    assert next(engine.get_finetuned_model().adapter.parameters()).device.type == "cpu"
