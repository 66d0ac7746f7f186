"""NUDGE (edits document vectors), BEIR loading, evaluation over given vectors, and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from adapterkit import EmbeddingQAFinetuneDataset, evaluate
from adapterkit.evaluation.nudge import nudge_documents, nudge_n
from adapterkit.metrics import paired_bootstrap


def test_nudge_n_turns_a_document_toward_its_questions_within_gamma():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(4, 16))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    gradient = rng.normal(size=(4, 16))
    gradient[3] = 0  # a document no question asks about
    for gamma in (0.0, 0.1, 0.4):
        out = nudge_n(docs, gradient, gamma)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        moved = ((out - docs) ** 2).sum(1)
        assert (moved <= gamma + 1e-5).all()
        np.testing.assert_allclose(out[3], docs[3], atol=1e-6)
        g = gradient[:3] / np.linalg.norm(gradient[:3], axis=1, keepdims=True)
        if gamma:  # closer to its questions than before, by the most the budget allows
            assert ((out[:3] * g).sum(1) >= (docs[:3] * g).sum(1) - 1e-6).all()
            np.testing.assert_allclose(moved[:3][(docs[:3] * g).sum(1) > 0], gamma, atol=1e-4)


@pytest.fixture(scope="module")
def scifact_small():
    from adapterkit.data.qa_sets import load_qa_datasets

    train, test = load_qa_datasets("scifact")
    docs = list(dict.fromkeys([d for q in list(train.queries)[:120] for d in train.relevant_docs[q]] + list(train.corpus)[:150]))
    return train.restrict(docs), test


def test_scifact_loads_as_beir_publishes_it(scifact_small):
    train, test = scifact_small
    assert len(test.queries) == 300 and len(test.corpus) == 5183
    assert sum(len(v) for v in test.relevant_docs.values()) == 339  # BEIR's test qrels rows
    doc = test.corpus["4983"]
    assert doc.startswith("Microstructural development of human newborn cerebral white matter") and ". Alterations of" in doc


@pytest.mark.integration  # embeds a whole slice with a real model: about a minute from an empty cache
def test_nudge_documents_helps_its_questions_and_evaluate_searches_given_vectors(scifact_small, bge):
    train, _ = scifact_small
    result = nudge_documents(train, bge, val_fraction=0.25, gammas=(0.0, 0.1, 0.2))
    assert set(result.val_mrr) == {0.0, 0.1, 0.2} and result.gamma in result.val_mrr and 0 < result.edited <= len(train.corpus)
    base = evaluate(train, bge, top_k=10)
    nudged = evaluate(train, bge, top_k=10, doc_vectors=result.doc_vectors)
    assert nudged["mrr"].mean() > base["mrr"].mean()  # on its own training questions, surely
    diff, low, high = paired_bootstrap(base["mrr"], nudged["mrr"])
    assert low <= diff <= high and diff > 0
    with pytest.raises(ValueError, match="no vector"):
        evaluate(train, bge, doc_vectors={})


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    assert paired_bootstrap(base, base) == (0.0, 0.0, 0.0)
    diff, low, high = paired_bootstrap(base, base + 0.05 + 0.1 * rng.normal(size=400))
    assert low < 0.05 < high and low > 0 and high - low < 0.05


def test_from_beir_reads_qrels_with_crlf_and_a_header(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "title": "", "text": "two"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first?"}\n{"_id": "q2", "text": "unjudged?"}\n')
    (tmp_path / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td2\t1\r\nq1\td1\t0\r\n")
    ds = EmbeddingQAFinetuneDataset.from_beir(tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "test.tsv")
    assert ds.queries == {"q1": "first?"} and ds.relevant_docs == {"q1": ["d2"]} and ds.corpus == {"d1": "T one", "d2": "two"}
