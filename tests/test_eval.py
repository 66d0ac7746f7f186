import math

import numpy as np
import pytest
import torch

from adapterkit import AdapterEmbeddingModel, LinearLayer, display_results, evaluate
from adapterkit.evaluation.evaluate import hit_rate_curve, win_loss
from adapterkit.metrics import exact_search, rank_metrics


def test_rank_metrics_by_hand():
    m = rank_metrics(np.array([3]), k=5)
    assert m == {
        "is_hit": True,
        "mrr": pytest.approx(1 / 3),
        "recall": 1.0,
        "ndcg": pytest.approx(1 / math.log2(4)),
        "ap": pytest.approx(1 / 3),
    }
    miss = rank_metrics(np.array([6]), k=5)
    assert (miss["is_hit"], miss["mrr"], miss["ndcg"], miss["ap"]) == (False, 0.0, 0.0, 0.0)
    # Two relevant docs at ranks 1 and 4: AP = (1/1 + 2/4) / 2; nDCG = (1 + 1/log2(5)) / (1 + 1/log2(3)).
    two = rank_metrics(np.array([4, 1]), k=5)
    assert two["mrr"] == 1.0 and two["recall"] == 1.0
    assert two["ap"] == pytest.approx((1 + 0.5) / 2)
    assert two["ndcg"] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert rank_metrics(np.array([2, 9]), k=5)["recall"] == 0.5
    # Graded: gains 3 (rank 2) and 1 (rank 1): DCG = 7/log2(3) + 1; IDCG = 7 + 1/log2(3).
    graded = rank_metrics(np.array([2, 1]), k=5, gains=np.array([3.0, 1.0]))
    assert graded["ndcg"] == pytest.approx((7 / math.log2(3) + 1) / (7 + 1 / math.log2(3)))


def test_exact_search_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(37, 16)).astype(np.float32)
    relevant = [[int(i) % 500, (int(i) * 7) % 500] for i in range(37)]
    top, _, ranks = exact_search(queries, docs, 10, relevant, query_chunk=8, doc_chunk=64)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    dn = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    scores = qn @ dn.T
    order = np.argsort(-scores, axis=1)
    np.testing.assert_array_equal(top, order[:, :10])
    for i, rel in enumerate(relevant):
        expected = [int(np.where(order[i] == r)[0][0]) + 1 for r in rel]
        assert list(ranks[i]) == expected


def test_evaluate_base_and_identity_adapter_agree(tmp_path, val_small, bge):
    base = evaluate(val_small, bge, top_k=5)
    assert list(base.columns[:5]) == ["query_id", "query", "expected", "retrieved", "rank"]
    assert len(base) == len(val_small.queries)
    assert base["is_hit"].mean() > 0.7  # a real model on real questions
    LinearLayer(384, 384).save(tmp_path / "identity")
    ident = evaluate(val_small, AdapterEmbeddingModel(bge, tmp_path / "identity"), top_k=5)
    np.testing.assert_allclose(ident["mrr"], base["mrr"], atol=1e-6)
    assert win_loss(base, ident)["ties"] == len(base)
    curve = hit_rate_curve(base)
    assert curve.is_monotonic_increasing and curve[5] == pytest.approx(base["is_hit"].mean())
    table = display_results(["base", "identity"], [base, ident], show=False)
    assert list(table.columns[:3]) == ["retrievers", "hit_rate", "mrr"]
    assert evaluate(val_small, "default", top_k=5)["mrr"].equals(base["mrr"])


def test_evaluate_rejects_wrong_dimension(tmp_path, val_small, bge):
    LinearLayer(768, 768).save(tmp_path / "big")
    with pytest.raises(ValueError, match="384-dimensional"):
        evaluate(val_small, AdapterEmbeddingModel(bge, tmp_path / "big"))


def test_metrics_for_many_queries_of_different_widths_match_hand_values():
    from adapterkit.metrics import metrics_at_k

    m = metrics_at_k([np.array([3]), np.array([4, 1]), np.array([6]), np.array([2, 9, 30])], k=5)
    np.testing.assert_allclose(m["mrr"], [1 / 3, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(m["recall"], [1.0, 1.0, 0.0, 1 / 3])
    np.testing.assert_allclose(m["ap"], [1 / 3, 0.75, 0.0, 0.5 / 3])
    assert m["is_hit"].tolist() == [True, True, False, True]


def test_ties_are_ranked_pessimistically_and_non_finite_scores_miss():
    docs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)  # rows 0, 1, 3 tie
    queries = np.array([[1.0, 0.0], [1.0, 0.0], [np.nan, 1.0]], dtype=np.float32)
    _, _, ranks = exact_search(queries, docs, 2, [[1], [0, 1], [0]])
    assert list(ranks[0]) == [3]  # two other docs share its score: it comes after both
    assert list(ranks[1]) == [2, 2]  # two tied relevant docs do not push each other down, only doc 3 does
    assert list(ranks[2]) == [4]  # a NaN query scores lowest: a miss, never a hit
    same = np.ones((5, 2), dtype=np.float32)  # a model that scores everything alike
    _, _, ranks = exact_search(np.ones((1, 2), dtype=np.float32), same, 5, [[2]])
    assert list(ranks[0]) == [5]


class _Constant(LinearLayer):
    """Maps every query to the zero vector: every document gets the same score."""

    def forward(self, embed):
        return torch.zeros_like(embed)


def test_nan_and_constant_adapters_never_score(tmp_path, val_small, bge):
    from adapterkit.adapters import AdapterLoadError

    nan = LinearLayer(384, 384)
    with torch.no_grad():
        nan.linear.weight[0, 0] = float("nan")
    nan.save(tmp_path / "nan")
    with pytest.raises(AdapterLoadError, match="not finite"):  # refused when loaded, before it serves anything
        evaluate(val_small, AdapterEmbeddingModel(bge, tmp_path / "nan"))
    LinearLayer(384, 384).save(tmp_path / "const")  # all-zero queries: an error when normalised, all tied when not
    constant = evaluate(val_small, AdapterEmbeddingModel(bge, tmp_path / "const", adapter_cls=_Constant, normalize=False))
    docs_per_query = val_small.relevant_docs
    assert constant["is_hit"].sum() == 0 and constant["mrr"].sum() == 0  # all tied: no query is a hit
    assert (constant["rank"] == [len(val_small.corpus) - len(docs_per_query[q]) + 1 for q in constant["query_id"]]).all()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_k"):
            evaluate(val_small, bge, top_k=bad)


def test_every_exact_top_k_ranks_nan_and_infinite_scores_last():
    """One rule in merge_top_k, which stored-vector search and memory keys use too: +inf and NaN are the lowest."""
    import torch

    from adapterkit.memory.keys import ExactIndex
    from adapterkit.metrics import merge_top_k

    scores = torch.tensor([[0.2, float("inf"), float("nan"), 0.9]])
    best_s, best_i = merge_top_k(torch.full((1, 4), -float("inf")), torch.full((1, 4), -1), scores, 0)
    assert best_i[0, :2].tolist() == [3, 0] and set(best_i[0, 2:].tolist()) == {1, 2}
    keys = np.array([[1.0, 0.0], [np.inf, 0.0], [0.0, 1.0]], dtype=np.float32)
    s, i = ExactIndex(keys).search(np.array([[1.0, 0.1]], dtype=np.float32), 2)
    assert i[0].tolist() == [0, 2]  # the infinite key never wins
