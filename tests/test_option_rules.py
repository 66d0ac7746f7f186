"""An option that could not take effect with the rest of the run is an error that names it and the fix."""

from __future__ import annotations

import pytest

from adapterkit import AdapterkitError, EmbeddingAdapterFinetuneEngine, FinetuneConfig
from adapterkit.training.config import CORPUS_OPTIONS, check_run


@pytest.mark.parametrize(
    "name, value",
    [
        ("pseudo_queries_per_chunk", 2),
        ("pseudo_query_words", (3, 8)),
        ("corpus_memory", False),
        ("memory_keys_per_chunk", 2),
        ("question_memory", False),
        ("question_memory_weights", (0.0, 0.5)),
        ("question_memory_temperatures", (20.0,)),
        ("memory_weight", 0.5),
        ("memory_temperature", 50.0),
    ],
)
def test_an_option_of_the_searched_corpus_needs_one(name, value, train_small, bge, tmp_path):
    assert name in CORPUS_OPTIONS
    with pytest.raises(ValueError, match=f"{name}.*unlabeled_corpus") as caught:
        EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path, show_progress=False, **{name: value})
    assert isinstance(caught.value, AdapterkitError)
    assert not any(tmp_path.iterdir())  # refused before any work
    # the same option with a searched corpus passes the rule
    check_run(FinetuneConfig().updated(**{name: value}), {name}, unlabeled_corpus=True)


def test_checkpoint_steps_need_a_checkpoint_folder(train_small, bge, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_save_steps.*model_checkpoint_path"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path, show_progress=False, checkpoint_save_steps=5)
    check_run(FinetuneConfig(checkpoint_save_steps=5), {"checkpoint_save_steps"}, unlabeled_corpus=False, checkpoints=True)


def test_defaults_never_fail_a_rule():
    check_run(FinetuneConfig(), set(), unlabeled_corpus=False)
    check_run(FinetuneConfig(), set(), unlabeled_corpus=True, index_model=True)


@pytest.mark.parametrize(
    "explicit, context, problem",
    [
        ({"map_sample"}, dict(unlabeled_corpus=True), "map_sample.*index_model"),
        (set(), dict(unlabeled_corpus=True, index_model=True, adapter_model=True), "adapter_model=None"),
        (set(), dict(unlabeled_corpus=True, index_model=True, bias=True), "bias=False"),
        (set(), dict(unlabeled_corpus=False, target_questions=True), "target_questions.*unlabeled_corpus"),
    ],
)
def test_the_other_combination_rules(explicit, context, problem):
    config = FinetuneConfig().updated(**({"map_sample": 0.5} if "map_sample" in explicit else {}))
    with pytest.raises(ValueError, match=problem):
        check_run(config, explicit, **context)


def test_hard_negatives_need_one_space():
    config = FinetuneConfig(negatives="in_batch", hard_negatives=2)
    check_run(config, {"negatives", "hard_negatives"}, unlabeled_corpus=True)
    with pytest.raises(ValueError, match="hard_negatives"):
        check_run(config, {"negatives", "hard_negatives"}, unlabeled_corpus=True, index_model=True)
