"""Labelled questions add to the label-free signals: pooled held-out evidence, and a default that only clear evidence moves."""

import numpy as np
import pytest
import torch

from adapterkit import CorpusMemory, EmbeddingAdapterFinetuneEngine
from adapterkit.cache import embed_texts
from adapterkit.training import selection
from adapterkit.training.config import FinetuneConfig
from adapterkit.training.memory_choice import choose_memories


def test_a_tied_labelled_group_does_not_veto_a_clear_pooled_gain():
    identity = np.array([1.0, 1.0, 1.0] + [0.2] * 40)  # 3 labelled questions already first; 40 pseudo-queries
    epoch = np.array([1.0, 1.0, 1.0] + [0.5] * 40)
    assert selection.choose(float(epoch.mean()), float(identity.mean()), epoch, identity, (3, 40))
    worse = epoch.copy()
    worse[:3] = [0.1, 0.1, 0.2]  # clearly worse on the labelled questions: refused, whatever the pooled gain
    assert not selection.choose(float(worse.mean()), float(identity.mean()), worse, identity, (3, 40))


def memory_inputs(dataset, model, n):
    corpus = dict(dataset.corpus)
    qids = list(dataset.queries)[:n]
    vectors = embed_texts(model, [dataset.queries[q] for q in qids], "query")
    docs = embed_texts(model, list(corpus.values()), "text")
    owners = {r: list(dataset.relevant_docs[q]) for r, q in enumerate(qids)}
    return vectors, owners, list(corpus), docs, CorpusMemory.from_corpus(corpus, model, weight=0.25, show_progress=False)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.integration
def test_a_handful_of_questions_keeps_the_label_free_memory(val_small, bge, n):
    vectors, owners, ids, docs, sentences = memory_inputs(val_small, bge, n)
    kept, choice = choose_memories(vectors, owners, ids, docs, sentences, FinetuneConfig())
    assert choice["held_out_questions"] == n and choice["default"] == "0.0/0.0/0.25"
    assert (choice["question_weight"], choice["sentence_weight"]) == (0.0, 0.25)  # too little evidence to move it
    assert set(kept) == {"sentences"} and kept["sentences"].weight == 0.25


def test_questions_asked_again_are_clear_evidence_for_a_question_memory(val_small, bge):
    twice = {**val_small.queries, **{q + "-again": t for q, t in val_small.queries.items()}}
    relevant = {**val_small.relevant_docs, **{q + "-again": d for q, d in val_small.relevant_docs.items()}}
    vectors = embed_texts(bge, list(twice.values()), "query")
    docs = embed_texts(bge, list(val_small.corpus.values()), "text")
    owners = {r: relevant[q] for r, q in enumerate(twice)}
    sentences = CorpusMemory.from_corpus(dict(val_small.corpus), bge, weight=0.25, show_progress=False)
    kept, choice = choose_memories(vectors, owners, list(val_small.corpus), docs, sentences, FinetuneConfig())
    assert choice["question_weight"] > 0 and "questions" in kept  # each held-out question's twin is in the other folds
    default = choice["mrr@10"][choice["default"]]
    chosen = choice["mrr@10"]["/".join(map(str, (choice["question_weight"], choice["question_temperature"], choice["sentence_weight"])))]
    assert chosen > default


def test_target_questions_leave_training_as_it_was_and_choose_the_memories(tmp_path, train_small, val_small, bge):
    options = dict(unlabeled_corpus=val_small.corpus, epochs=2, show_progress=False)
    plain = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "a", **options)
    plain.finetune()
    yours = val_small.with_queries(list(val_small.queries)[:8])
    added = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "b", target_questions=yours, **options)
    added.finetune()
    assert plain.memory_choice is None and added.memory_choice["held_out_questions"] == 8
    assert added.best_epoch == plain.best_epoch
    for a, b in zip(plain.model.state_dict().values(), added.model.state_dict().values()):
        assert torch.equal(a, b)  # the same adapter: your questions are evidence for the memories, not training pairs
    with pytest.raises(ValueError, match="give unlabeled_corpus too"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "c", target_questions=yours, show_progress=False)


def test_the_sign_test_needs_more_than_two_equal_gains():
    from adapterkit.training.memory_choice import more_helped_than_hurt

    assert not more_helped_than_hurt(np.array([0.5, 0.5]))
    assert more_helped_than_hurt(np.array([0.5, 0.5, 0.5]))
    assert not more_helped_than_hurt(np.array([0.5, 0.5, 0.5, -0.1]))
    assert more_helped_than_hurt(np.array([0.5] * 5 + [-0.1] + [0.0] * 20))  # unmoved questions do not count
    assert not more_helped_than_hurt(np.zeros(10))
