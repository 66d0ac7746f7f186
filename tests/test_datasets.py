import json

import numpy as np
import pytest

from adapterkit.data.datasets import DatasetError, EmbeddingQAFinetuneDataset


def test_published_files_load(train_full, val_full):
    assert (len(train_full.queries), len(train_full.corpus)) == (668, 334)
    assert (len(val_full.queries), len(val_full.corpus)) == (790, 395)
    assert val_full.mode == "text"
    assert min(len(t) for t in train_full.corpus.values()) < 5  # real data keeps its tiny chunks


def test_roundtrip_and_llamaindex_mode(tmp_path, val_small):
    path = tmp_path / "ds.json"
    val_small.save_json(path)
    data = json.loads(path.read_text())
    assert data["mode"] == "text"
    again = EmbeddingQAFinetuneDataset.from_json(path)
    assert again.queries == val_small.queries and again.relevant_docs == val_small.relevant_docs
    del data["mode"]
    path.write_text(json.dumps(data))
    assert EmbeddingQAFinetuneDataset.from_json(path).corpus == val_small.corpus


def _write(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "payload, message",
    [
        ('{"queries": {}, "corpus": {"d": "x"}, "relevant_docs": {}}', "no queries"),
        ('{"queries": {"q": "a?"}, "corpus": {}, "relevant_docs": {"q": ["d"]}}', "empty corpus"),
        ('{"queries": {"q": "a?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["zz"]}}', "not in the corpus"),
        ('{"queries": {"q": "a?"}, "corpus": {"d": "x"}, "relevant_docs": {}}', "no relevant doc"),
        ('{"queries": {"q": "a?", "q": "b?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["d"]}}', "Duplicate id 'q'"),
        ("[1, 2]", "expected an object with keys"),
        ('{"queries": [], "corpus": {}, "relevant_docs": {}}', "must be an object"),
        ('{"queries": ', "not valid JSON"),
        ('{"queries": {"q": "a?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": [7]}}', "must be a list of corpus ids"),
        ('{"queries": {"q": 3}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["d"]}}', r"queries\['q'\] must be text"),
        ('{"queries": {"q": "a \\ud800?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["d"]}}', "lone surrogate"),
        ('{"queries": {"q": "a?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["d"]}, "mode": 2}', "'mode' must be"),
    ],
)
def test_bad_datasets_are_explained(tmp_path, payload, message):
    with pytest.raises(DatasetError, match=message):
        EmbeddingQAFinetuneDataset.from_json(_write(tmp_path, payload))


def test_non_utf8_file_and_non_string_ids_are_explained(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"queries": {"q": "caf\u00e9?"}, "corpus": {"d": "x"}, "relevant_docs": {"q": ["d"]}}'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        EmbeddingQAFinetuneDataset.from_json(path)
    with pytest.raises(DatasetError, match="ids must be strings"):
        EmbeddingQAFinetuneDataset.from_dict({"queries": {1: "a?"}, "corpus": {"d": "x"}, "relevant_docs": {1: ["d"]}})


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        EmbeddingQAFinetuneDataset.from_json(tmp_path / "nope.json")


def test_restrict_keeps_chunks_and_their_queries():
    ds = EmbeddingQAFinetuneDataset(
        queries={"q1": "a?", "q2": "b?", "q3": "c?"},
        corpus={"d1": "one", "d2": "two", "d3": "three"},
        relevant_docs={"q1": ["d1", "d2"], "q2": ["d2"], "q3": ["d3"]},
    )
    part = ds.restrict(["d3", "d1"])
    assert list(part.corpus) == ["d1", "d3"]  # corpus order, not the order asked
    assert part.relevant_docs == {"q1": ["d1"], "q3": ["d3"]}  # q2's chunk left; d2 dropped from q1
    assert part.queries == {"q1": "a?", "q3": "c?"}


@pytest.mark.parametrize("n, fraction, held", [(10, 0.2, 2), (8, 0.2, 2), (7, 0.2, 1), (2, 0.2, 1), (2, 0.9, 1), (1, 0.5, 0), (5, 0.0, 0)])
def test_one_rule_for_how_many_rows_are_held_out(n, fraction, held):
    from adapterkit.data.splits import held_out

    kept, out = held_out(n, fraction, np.random.default_rng(0))
    assert len(out) == held and sorted(np.concatenate([kept, out]).tolist()) == list(range(n))


def test_a_held_out_fraction_out_of_range_is_an_error():
    from adapterkit.data.splits import held_out

    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        held_out(5, 1.0, np.random.default_rng(0))


def test_held_out_splits_are_disjoint_seeded_and_keep_their_corpus(train_full):
    from adapterkit.data.splits import split_corpus, split_queries

    fit, held = split_queries(train_full, seed=0)
    assert len(held.queries) == round(len(train_full.queries) / 5) and not set(fit.queries) & set(held.queries)
    assert set(fit.queries) | set(held.queries) == set(train_full.queries) and fit.corpus == held.corpus == train_full.corpus
    assert list(split_queries(train_full, seed=0)[1].queries) == list(held.queries) != list(split_queries(train_full, seed=1)[1].queries)
    one, other = split_corpus(train_full, seed=0)
    assert not set(one.corpus) & set(other.corpus) and abs(len(one.corpus) - len(other.corpus)) <= 1
    assert all(d in one.corpus for docs in one.relevant_docs.values() for d in docs)
