"""An option that could not take effect with the rest of the run is an error that names it and the fix."""

from __future__ import annotations

import pytest
import torch

from adapterkit import AdapterkitError, EmbeddingAdapterFinetuneEngine, FinetuneConfig
from adapterkit.training.config import CORPUS_OPTIONS, OptionError, OptionNameError, check_run, parse_options


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


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer_params": {"lr": 1e-3, "betas": {"a": 1}}},  # torch raises KeyError
        {"optimizer_params": {"lr": 1e-3, "capturable": True}},  # torch asserts on CPU
        {"optimizer_params": {"lr": 0.1, "eps": float("inf")}},  # steps of nothing
        {"optimizer_class": torch.optim.SGD, "optimizer_params": {"lr": 0.1, "momentum": float("nan")}},  # fails on the second step
        {"optimizer_params": None},
        {"optimizer_params": "ab"},
        {"pseudo_query_words": 5},
        {"question_memory_weights": 0.5},
        {"question_memory_weights": ()},
        {"question_memory_temperatures": ()},
        {"max_grad_norm": 0.0},  # clips every gradient to nothing
        {"map_sample": -1},
        {"map_sample": True},
    ],
)
def test_values_that_could_not_train_are_option_errors(options):
    with pytest.raises(OptionError):
        FinetuneConfig().updated(**options)


def test_option_names_and_deep_values_from_the_command_line():
    with pytest.raises(OptionNameError, match="Unknown option"):
        FinetuneConfig().updated(learning_rate=1e-3)
    assert issubclass(OptionNameError, TypeError)  # as the unknown keyword argument it is
    with pytest.raises(OptionError, match="question_memory_weights"):
        parse_options({"question_memory_weights": "[" * 3000 + "]" * 3000})


@pytest.mark.parametrize(
    "options, context, problem",
    [
        ({"corpus_memory": False, "memory_weight": 0.9}, {}, "memory_weight.*corpus_memory=False"),
        ({"corpus_memory": False, "memory_temperature": 7.0}, {}, "memory_temperature.*corpus_memory=False"),
        ({"question_memory": False, "question_memory_weights": (0.5,)}, {}, "question_memory_weights.*question_memory=False"),
        ({"question_memory_weights": (0.5,)}, {"questions_on_target": False}, "no labelled question"),
        ({}, {"adapter_model": True, "bias": True}, "bias"),
        ({}, {"unlabeled_corpus": False, "pseudo_query_llm": True}, "pseudo_query_llm.*unlabeled_corpus"),
        ({"pseudo_query_words": (3, 8)}, {"pseudo_query_llm": True}, "pseudo_query_words.*pseudo_query_llm"),
    ],
)
def test_options_that_would_do_nothing_here_are_errors(options, context, problem):
    config = FinetuneConfig().updated(**options)
    with pytest.raises(OptionError, match=problem):
        check_run(config, set(options), **{"unlabeled_corpus": True, **context})
    if "questions_on_target" in context:
        check_run(config, set(options), unlabeled_corpus=True, questions_on_target=True)  # with questions about it, it acts


def test_the_engine_refuses_what_it_would_ignore(train_small, bge, tmp_path):
    from adapterkit import LinearLayer

    with pytest.raises(OptionError, match="bias"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, adapter_model=LinearLayer(384, 384), bias=True, model_output_path=tmp_path)
    with pytest.raises(OptionError, match="pseudo_query_llm"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, pseudo_query_llm="anything", model_output_path=tmp_path)
    with pytest.raises(OptionError, match="no labelled question"):  # the Lyft questions are not about these Uber-like chunks
        EmbeddingAdapterFinetuneEngine(
            train_small,
            bge,
            unlabeled_corpus={"u1": "Uber's drivers and couriers are independent contractors in most markets we serve."},
            question_memory_weights=(0.5,),
            model_output_path=tmp_path,
            show_progress=False,
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "options, store_memory, problem",
    [
        ({"corpus_memory": True}, "sampled", "leave corpus_memory out"),
        ({"corpus_memory": True}, "table", "leave corpus_memory out"),
        ({"memory_weight": 0.5}, "sampled", "memory_weight.*memory_table"),
        ({"memory_keys_per_chunk": 2}, "sampled", "memory_keys_per_chunk.*memory_table"),
    ],
)
def test_a_store_read_in_part_has_its_own_memory_rules(options, store_memory, problem):
    config = FinetuneConfig().updated(**options)
    with pytest.raises(OptionError, match=problem):
        check_run(config, set(options), unlabeled_corpus=True, store_memory=store_memory)
    check_run(config, set(options) - {"corpus_memory"}, unlabeled_corpus=True, store_memory="table")  # the database memory takes them


def test_a_fit_is_a_plan_of_every_parameter_and_the_sentence_memory_options_go_to_the_database(tmp_path):
    """plan_fit reads every parameter of fit_documents; with memory_table the pull goes to the database memory, not the engine."""
    import dataclasses
    import inspect

    from adapterkit.pipeline.fit import fit_documents
    from adapterkit.pipeline.fit_plan import FitPlan, plan_fit

    parameters = {name: p.default for name, p in inspect.signature(fit_documents).parameters.items() if name != "options"}
    assert set(parameters) == {f.name for f in dataclasses.fields(FitPlan)} - {"config", "engine_options", "memory_options"}
    arguments = {**parameters, "out": tmp_path / "model", "store": "postgresql://u@localhost/db?table=chunks", "memory_table": "mem"}
    plan = plan_fit(arguments, {"memory_weight": 0.5, "memory_temperature": 40.0, "epochs": 3})
    assert plan.engine_options == {"epochs": 3, "corpus_memory": False}
    assert plan.memory_options == {"max_keys": None, "weight": 0.5, "temperature": 40.0}
    assert (plan.config.epochs, plan.eval_chunks, plan.out) == (3, 40, tmp_path / "model")
    (tmp_path / "docs").mkdir()
    folder = plan_fit({**parameters, "docs": tmp_path / "docs", "out": tmp_path / "m"}, {"memory_weight": 0.5})
    assert folder.engine_options == {"memory_weight": 0.5} and folder.memory_options == {}
    with pytest.raises(OptionError, match="memory_weight.*memory_table"):
        plan_fit({**arguments, "memory_table": None, "sample_chunks": 10}, {"memory_weight": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["docs"]  # planning writes nothing
