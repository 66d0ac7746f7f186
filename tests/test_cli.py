"""The ``adapterkit`` command on small real folders: fit, eval, questions, re-runs and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapterkit import AdapterEmbeddingModel, EmbeddingQAFinetuneDataset
from adapterkit.cache import embed_texts
from adapterkit.cli import main
from adapterkit.data.folders import read_folder
from adapterkit.stores.stored_vectors import VERIFY_ROWS

TOPICS = {
    "bats.txt": "CHUNK-0 Fruit bats pollinate many tropical plants and spread their seeds. They feed at night and can travel "
    "long distances between roosts and fruiting trees. Some colonies roost in caves with millions of others.",
    "notes/tides.md": "# Tides\n\nCHUNK-1 Tides are caused mainly by the gravitational pull of the Moon on the oceans. Spring tides "
    "happen when the Sun and Moon line up, and neap tides when they are at right angles to each other.",
    "notes/glaciers.html": "<html><body><h1>Glaciers</h1><p>CHUNK-2 Glaciers form where snow accumulates faster than it melts over "
    "many years. The weight of the ice makes it flow slowly downhill, carving valleys shaped like a U.</p></body></html>",
    "volcanoes.txt": "CHUNK-3 Volcanoes erupt when magma rises through cracks in the crust of the Earth. Shield volcanoes have gentle "
    "slopes built from runny lava, while stratovolcanoes are steep and explosive.",
    "bees.md": "CHUNK-4 Honey bees communicate the direction of flowers with a waggle dance inside the hive. Worker bees collect "
    "nectar and pollen, and the colony stores honey to survive the winter.",
    "comets.txt": "CHUNK-5 Comets are icy bodies that grow a glowing coma and tails when they approach the Sun. Their tails always "
    "point away from the Sun because of the solar wind and radiation pressure.",
}
QUESTIONS = {
    "bats.txt": "Which animals pollinate tropical plants at night?",
    "notes/tides.md": "What causes spring tides and neap tides?",
    "notes/glaciers.html": "How do glaciers carve U-shaped valleys?",
    "volcanoes.txt": "Why are some volcanoes steep and explosive?",
    "bees.md": "How do honey bees tell each other where flowers are?",
    "comets.txt": "Why does a comet's tail point away from the Sun?",
}
FAST = ["--epochs", "1", "--quiet"]


def write_docs(folder: Path, topics=TOPICS) -> Path:
    for name, text in topics.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def write_questions(folder: Path, path: Path, files=tuple(QUESTIONS)) -> Path:
    found = read_folder(folder, show_progress=False)
    ids = {name: chunks[0] for name, chunks in found.chunks_of.items() if name in files}
    EmbeddingQAFinetuneDataset(
        queries={f"q{i}": QUESTIONS[n] for i, n in enumerate(ids)},
        corpus=found.corpus,
        relevant_docs={f"q{i}": [ids[n]] for i, n in enumerate(ids)},
    ).save_json(path)
    return path


@pytest.fixture
def docs(tmp_path):
    return write_docs(tmp_path / "docs")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_for_every_command():
    for argv in (["--help"], ["fit", "--help"], ["eval", "--help"], ["questions", "--help"]):
        result = subprocess.run([sys.executable, "-m", "adapterkit.cli", *argv], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: adapterkit" in result.stdout


def test_the_console_script_is_installed():
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts") if e.name == "adapterkit"] == ["adapterkit.cli:main"]


@pytest.mark.slow
def test_fit_with_your_questions_reports_base_next_to_the_adapter(tmp_path, docs, capsys):
    questions = write_questions(docs, tmp_path / "questions.json")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "model", "--questions", questions, *FAST)
    assert code == 0, err
    model = tmp_path / "model"
    report = (model / "report.md").read_text()
    summary = json.loads((model / "report.json").read_text())
    assert summary["evaluation"]["kind"] == "questions" and summary["evaluation"]["questions"] == 1  # a fifth of 6, rounded
    assert [row["model"] for row in summary["table"]] == ["base", "adapter"] and "| base |" in report
    assert (model / "hit_rate_at_k.png").is_file() and "VectorStoreIndex.from_vector_store" in report
    assert summary["chunks"] == 6 and summary["files"] == 6

    # The folder is a model folder that both serving classes load.
    from llama_index.embeddings.adapter import AdapterEmbeddingModel as LlamaIndexAdapterModel

    ours = AdapterEmbeddingModel("default", model)
    theirs = LlamaIndexAdapterModel(ours.base_embed_model, str(model), device="cpu")
    assert len(ours.get_query_embedding("bees")) == len(theirs.get_query_embedding("bees")) == 384

    # eval on the same questions file: base next to the adapter, written beside the model.
    code, out, err = run(capsys, "eval", model, questions, "--quiet")
    assert code == 0, err
    assert "adapter" in out and (model / "eval" / "eval.md").is_file()
    assert json.loads((model / "eval" / "eval.json").read_text())["table"][0]["model"] == "base"
    code, out, err = run(capsys, "eval", model, questions, "--embed-model", "minilm", "--quiet")
    assert code == 1 and "was fitted over the base model" in err  # another base model is refused, not scored


def test_without_labels_or_llm_the_report_says_there_is_no_evaluation(tmp_path, docs, capsys):
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "model", *FAST)
    assert code == 0, err
    summary = json.loads((tmp_path / "model" / "report.json").read_text())
    assert summary["evaluation"]["kind"] == "none" and summary["table"] is None
    assert "no independent evaluation" in (tmp_path / "model" / "report.md").read_text()
    assert 0 < summary["query_movement"]["median_cosine_base_vs_served"] <= 1


@pytest.mark.slow
def test_a_re_run_embeds_only_what_changed(tmp_path, docs, capsys):
    cache = tmp_path / "cache"  # a cache of its own: the counts are this folder's texts only
    model = tmp_path / "model"
    questions = write_questions(docs, tmp_path / "q.json", files=("bats.txt", "notes/tides.md", "volcanoes.txt", "bees.md"))
    fit = ("fit", docs, "--out", model, "--cache-dir", cache, "--questions", questions, "--set", "question_memory=false", *FAST)
    assert run(capsys, *fit)[0] == 0
    first = json.loads((model / "report.json").read_text())
    assert first["embedded_by_base_model"]["text"] == 6 and first["changes"]["first_run"]

    assert run(capsys, *fit)[0] == 0
    same = json.loads((model / "report.json").read_text())
    assert same["embedded_by_base_model"] == {"text": 0, "query": 0}
    assert same["changes"]["chunks_unchanged"] == 6 and not same["changes"]["files_changed"]

    (docs / "bees.md").write_text(TOPICS["bees.md"] + " Drones do not collect food and leave the hive to mate.")
    (docs / "comets.txt").unlink()
    (docs / "moss.txt").write_text("Mosses grow in damp shade and have no roots, only thin rhizoids that anchor them to rocks.")
    code, out, err = run(capsys, *fit)
    assert code == 0, err
    after = json.loads((model / "report.json").read_text())
    assert list(after["evaluation"]["left_out"].values()) == [
        "its chunks are no longer in the documents"
    ]  # the question about the edited bees.md
    changes = after["changes"]
    assert (changes["files_added"], changes["files_changed"], changes["files_removed"]) == (["moss.txt"], ["bees.md"], ["comets.txt"])
    assert (changes["chunks_added"], changes["chunks_removed"], changes["chunks_unchanged"]) == (2, 2, 4)
    assert after["embedded_by_base_model"]["text"] == 2  # the new and the edited chunk, nothing else
    assert "1 files added, 1 changed, 1 removed" in out
    memory = AdapterEmbeddingModel("default", model).memories[0]
    assert len(memory.chunk_ids) == 6 and set(memory.chunk_ids) == set(read_folder(docs, show_progress=False).corpus)

    (docs / "moss.txt").unlink()
    assert run(capsys, *fit)[0] == 0
    removed = json.loads((model / "report.json").read_text())
    assert removed["changes"]["files_removed"] == ["moss.txt"]
    assert removed["embedded_by_base_model"] == {"text": 0, "query": 0}  # the other chunks' pseudo-queries stay as drawn


@pytest.mark.slow
def test_an_llm_writes_the_evaluation_questions_and_none_is_trained_on(tmp_path, docs, capsys, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{fake_openai.server_port}/v1")
    model = tmp_path / "model"
    code, out, err = run(capsys, "fit", docs, "--out", model, "--llm", "openai:gpt-4o-mini", *FAST)
    assert code == 1 and "pass --yes" in err and fake_openai.requests == 0  # no terminal to ask on: nothing sent
    code, out, err = run(capsys, "fit", docs, "--out", model, "--llm", "openai:gpt-4o-mini", "--yes", *FAST)
    assert code == 0, err
    summary = json.loads((model / "report.json").read_text())
    assert summary["evaluation"]["kind"] == "llm" and summary["evaluation"]["chunks_asked"] == 1 == fake_openai.requests
    assert summary["evaluation"]["questions"] == 2 and summary["table"][1]["model"] == "adapter"
    asked = json.loads((model / "eval_questions.json").read_text())
    assert all("CHUNK-" in q for q in asked["queries"].values())


def test_questions_command_writes_a_resumable_dataset(tmp_path, docs, capsys, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{fake_openai.server_port}/v1")
    out = tmp_path / "questions.json"
    code, stdout, err = run(capsys, "questions", docs, "--llm", "openai:gpt-4o-mini", "--out", out, "--yes", "--quiet")
    assert code == 0, err
    written = EmbeddingQAFinetuneDataset.from_json(out)
    assert len(written.queries) == 12 and fake_openai.requests == 6
    assert set(written.corpus) == set(read_folder(docs, show_progress=False).corpus)  # the ids fit uses
    assert run(capsys, "questions", docs, "--llm", "openai:gpt-4o-mini", "--out", out, "--yes", "--quiet")[0] == 0
    assert fake_openai.requests == 6  # every chunk was done: nothing asked again


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir(), "No readable document"),
        (lambda d: (d.mkdir(), (d / "scan.pdf").write_bytes(b"%PDF-1.4 not really"), (d / "x.bin").write_bytes(b"\0")), "unreadable"),
    ],
)
def test_a_folder_with_nothing_readable_is_an_error(tmp_path, capsys, make, message):
    make(tmp_path / "docs")
    code, out, err = run(capsys, "fit", tmp_path / "docs", "--out", tmp_path / "model", *FAST)
    assert code == 1 and message in err and not (tmp_path / "model").exists()


def test_unreadable_files_are_skipped_and_named(tmp_path, docs, capsys):
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8")
    (docs / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me, a notes file saved in Latin-1.".encode("latin-1"))
    found = read_folder(docs, show_progress=False)
    assert len(found.nodes) == 6 and set(found.skipped) == {"broken.pdf", "photo.jpg", "latin1.txt"}
    assert "unreadable" in found.skipped["broken.pdf"] and "unsupported" in found.skipped["photo.jpg"]
    assert "save it as UTF-8" in found.skipped["latin1.txt"]


def test_html_pages_give_their_content_not_their_navigation(tmp_path):
    page = (
        "<html><body><nav>Home Chapters Search</nav><main><h1>Lifetimes</h1>"
        "<p>Every reference has a <em>lifetime</em>.</p></main></body></html>"
    )
    (tmp_path / "page.html").write_text(page)
    (node,) = read_folder(tmp_path, show_progress=False).nodes
    assert node.text == "Lifetimes Every reference has a lifetime ." and node.metadata["file_path"] == "page.html"


def test_a_file_that_changes_while_read_is_skipped(tmp_path, docs, monkeypatch):
    import adapterkit.data.folders as folders

    real = folders._read_one

    def read_and_append(path, readers):
        result = real(path, readers)
        if path.name == "bats.txt":
            with open(path, "a") as f:
                f.write(" More text arrives while the file is read.")
        return result

    monkeypatch.setattr(folders, "_read_one", read_and_append)
    found = read_folder(docs, show_progress=False)
    assert "changed while it was being read" in found.skipped["bats.txt"] and len(found.nodes) == 5


def test_an_output_folder_holding_another_model_is_refused(tmp_path, docs, capsys):
    other = write_docs(tmp_path / "other", {"a.txt": TOPICS["bats.txt"], "b.txt": TOPICS["bees.md"]})
    model = tmp_path / "model"
    assert run(capsys, "fit", other, "--out", model, *FAST)[0] == 0
    code, out, err = run(capsys, "fit", docs, "--out", model, *FAST)
    assert code == 1 and "already holds a model fitted on" in err and "--overwrite" in err
    assert json.loads((model / "fit.json").read_text())["origin"] == str(other)  # untouched
    assert run(capsys, "fit", docs, "--out", model, "--overwrite", *FAST)[0] == 0
    assert json.loads((model / "fit.json").read_text())["origin"] == str(docs)

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "thesis.txt").write_text("my own file")
    code, out, err = run(capsys, "fit", docs, "--out", plain, "--overwrite", *FAST)
    assert code == 1 and "not a model" in err and (plain / "thesis.txt").read_text() == "my own file"


def test_questions_whose_ids_are_not_these_chunks_are_an_error(tmp_path, docs, capsys):
    questions = tmp_path / "q.json"
    EmbeddingQAFinetuneDataset(queries={"q": "what?"}, corpus={"elsewhere": "text"}, relevant_docs={"q": ["elsewhere"]}).save_json(
        questions
    )
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "model", "--questions", questions, *FAST)
    assert code == 1 and "are not chunks of these documents" in err and "adapterkit chunks DOCS" in err and "rows of question, file" in err


def test_options_that_cannot_take_effect_are_errors(tmp_path, docs, capsys):
    questions = write_questions(docs, tmp_path / "q.json")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--questions", questions, "--llm", "default", *FAST)
    assert code == 1 and "not both" in err
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--eval-chunks", "5", *FAST)
    assert code == 1 and "give llm too" in err
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--set", "epochz=3", *FAST)
    assert code == 1 and "epochz" in err and not (tmp_path / "m" / "config.json").exists()
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--set", "embed_model=minilm", *FAST)
    assert code == 1 and "not a training or chunking option" in err and "--embed-model" in err  # the command's own option


def test_a_corrupt_cache_is_an_error_message_not_a_traceback(tmp_path, docs, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--cache-dir", tmp_path / "cache", *FAST)
    assert code == 1 and "cannot be read" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "uri, message",
    [
        ("mysql://me:secret@host/db?password=secret", "Unknown store URI"),
        ("postgresql://me:secret@127.0.0.1:1/db", "name the table"),
        ("qdrant://myhost/data?collection=chunks&api_key=secret", "three slashes"),  # a host where a folder was meant
        ("qdrant+http://127.0.0.1:1?collection=chunks&colection=x&api_key=secret", "unknown parameter"),
    ],
)
def test_a_wrong_store_uri_is_an_error(tmp_path, capsys, uri, message):
    code, out, err = run(capsys, "fit", "--store", uri, "--out", tmp_path / "model", *FAST)
    assert code == 1 and message in err and "secret" not in err


def test_eval_needs_a_model_folder(tmp_path, capsys):
    questions = tmp_path / "q.json"
    EmbeddingQAFinetuneDataset(queries={"q": "what?"}, corpus={"d": "text"}, relevant_docs={"q": ["d"]}).save_json(questions)
    code, out, err = run(capsys, "eval", tmp_path, questions)
    assert code == 1 and "not a model folder" in err


@pytest.mark.slow
def test_fit_from_a_pgvector_table_embeds_no_stored_chunk(tmp_path, docs, capsys, bge):
    from llama_index.core import StorageContext, VectorStoreIndex

    from adapterkit.stores.postgres import LocalPostgres

    nodes = read_folder(docs, show_progress=False).nodes
    with LocalPostgres() as pg:
        store = pg.vector_store("my_chunks", embed_dim=384)
        VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=bge)
        uri = f"postgresql://postgres@/postgres?host={pg.socket_dir}&table=my_chunks"
        questions = write_questions(docs, tmp_path / "q.json")
        code, out, err = run(
            capsys, "fit", "--store", uri, "--out", tmp_path / "model", "--questions", questions, "--cache-dir", tmp_path / "cache", *FAST
        )
        assert code == 0, err
        summary = json.loads((tmp_path / "model" / "report.json").read_text())
        assert summary["chunks"] == 6 and summary["embedded_by_base_model"]["text"] == 6  # the store check: every row of a store this small
        assert summary["table"][0]["model"] == "base"

        code, out, err = run(capsys, "fit", "--store", uri.replace("my_chunks", "nothing_here"), "--out", tmp_path / "m2", *FAST)
        assert code == 1 and 'data_nothing_here" does not exist' in err, err  # a table that is not there
        code, out, err = run(capsys, "fit", "--store", uri.replace("postgres@", "nobody:secret@"), "--out", tmp_path / "m2", *FAST)
        assert code == 1 and "Could not read the chunks" in err and "nobody" in err and "secret" not in err  # wrong credentials

    code, out, err = run(capsys, "fit", "--store", uri, "--out", tmp_path / "m3", *FAST)  # the server has gone
    assert code == 1 and "Could not read the chunks" in err and "server is running" in err


def test_fit_from_a_sample_of_a_large_store_keeps_the_memory_in_the_database(tmp_path, docs, capsys, bge):
    """300 filler chunks besides the 6 documents: training reads the questions' chunks and a sample of 20,
    the questions are ranked among all 306, and the sentence memory of all 306 is a table on the server."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from adapterkit.memory.pg_memory import PgMemory
    from adapterkit.stores.postgres import LocalPostgres

    nodes = read_folder(docs, show_progress=False).nodes
    texts = [f"filler chunk {i}" for i in range(300)]
    filler = [TextNode(id_=f"filler-{i}", text=t, embedding=v.tolist()) for i, (t, v) in enumerate(zip(texts, embed_texts(bge, texts)))]
    with LocalPostgres() as pg:
        store = pg.vector_store("big", embed_dim=384)
        VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=bge)
        store.add(filler)
        uri = f"postgresql://postgres@/postgres?host={pg.socket_dir}&table=big"
        questions = write_questions(docs, tmp_path / "q.json")
        args = ["--store", uri, "--questions", questions, "--sample-chunks", "20", "--cache-dir", tmp_path / "cache", *FAST]
        code, out, err = run(
            capsys, "fit", "--out", tmp_path / "model", "--memory-table", "big_memory", "--set", "memory_keys_per_chunk=1", *args
        )
        assert code == 0, err
        summary = json.loads((tmp_path / "model" / "report.json").read_text())
        assert summary["chunks"] == 6 + 20 and summary["stored_chunks"] == 306  # what training held, of what the store holds
        assert summary["embedded_by_base_model"]["text"] == VERIFY_ROWS  # the store check only
        assert summary["database_memory"]["keys"] == 6  # one sentence key per document chunk; "filler chunk i" has none
        memory = PgMemory(pg.url(), "big_memory")
        assert len(memory) == 306 and memory.max_keys == 1 and not (tmp_path / "model" / "memory" / "sentences").exists()
        report = (tmp_path / "model" / "report.md").read_text()
        assert "Training read 26 of the store's 306 chunks" in report and 'memory=[PgMemory(url, "big_memory")]' in report
        assert "LlamaIndex's own `AdapterEmbeddingModel` (llama-index-embeddings-adapter) serves this folder's adapter alone" in report
        assert summary["table"][0]["model"] == "base"

        # a re-run builds the memory afresh (its keys come from the cache) and replaces the finished one
        code, out, err = run(
            capsys, "fit", "--out", tmp_path / "model", "--memory-table", "big_memory", "--set", "memory_weight=0.5", *args
        )
        assert code == 0, err
        assert PgMemory(pg.url(), "big_memory").weight == 0.5 and json.loads((tmp_path / "model" / "report.json").read_text())[
            "embedded_by_base_model"
        ] == {"text": VERIFY_ROWS, "query": 0}

        for extra, message in (
            (["--set", "corpus_memory=True"], "leave corpus_memory out"),
            (["--set", "memory_keys_per_chunk=2"], "give one"),
            (["--set", "memory_weight=0.5"], "give one"),
            (["--memory-table", "Bad Name"], "Bad Name"),
        ):
            code, out, err = run(capsys, "fit", "--out", tmp_path / "m2", *args, *extra)
            assert code == 1 and message in err, err
        code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m2", *args)  # a folder too: which one?
        assert code == 1 and "not both" in err
        code, out, err = run(capsys, "fit", "--store", uri, "--out", tmp_path / "m2", "--sample-chunks", "0", *FAST)
        assert code == 1 and "no questions were given" in err
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m3", "--sample-chunks", "5", *FAST)
    assert code == 1 and "give store (--store) too" in err
    from llama_index.core.vector_stores import SimpleVectorStore

    from adapterkit.pipeline.fit import fit_documents

    with pytest.raises(ValueError, match="this store is SimpleVectorStore"):
        fit_documents(out=tmp_path / "m4", store=SimpleVectorStore(), memory_table="m")


def test_fit_from_a_qdrant_collection_keeps_the_memory_in_that_qdrant(tmp_path, docs, capsys, bge):
    from adapterkit.memory.qdrant_memory import QdrantMemory
    from adapterkit.stores.indexes import build_qdrant_index, open_qdrant

    build_qdrant_index(read_folder(docs, show_progress=False).nodes, bge, tmp_path / "qdrant", collection="chunks")
    questions = write_questions(docs, tmp_path / "q.json", files=tuple(QUESTIONS)[:4])
    code, out, err = run(
        capsys,
        "fit",
        "--store",
        f"qdrant:///{tmp_path / 'qdrant'}?collection=chunks",
        "--out",
        tmp_path / "model",
        "--questions",
        questions,
        "--sample-chunks",
        "1",
        "--memory-table",
        "chunk_memory",
        "--cache-dir",
        tmp_path / "cache",
        *FAST,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "model" / "report.json").read_text())
    assert summary["stored_chunks"] == 6 and summary["chunks"] == 4 + 1 and summary["database_memory"]["kind"] == "QdrantMemory"
    client = open_qdrant(tmp_path / "qdrant")
    try:
        memory = QdrantMemory(client, "chunk_memory")
        assert len(memory) == 6 and memory.key_count() == summary["database_memory"]["keys"] > 6  # every sentence of every chunk
    finally:
        client.close()


def test_store_uris_are_redacted_wherever_they_are_shown():
    from adapterkit.pipeline.sources import redact

    shown = redact("postgresql://me:pw1@db:5432/rag?table=chunks&sslpassword=pw2&host=/run/pg")
    assert "pw1" not in shown and "pw2" not in shown and "table=chunks" in shown and "host=/run/pg" in shown


def test_an_output_folder_inside_the_documents_is_refused(docs, capsys):
    code, out, err = run(capsys, "fit", docs, "--out", docs / "model", *FAST)
    assert code == 1 and "inside the documents folder" in err and not (docs / "model").exists()


def test_a_missing_reader_package_is_named_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "page.html").write_text("<html><body><main><p>Bees dance to tell where flowers are.</p></main></body></html>")
    (tmp_path / "notes.txt").write_text("Mosses grow in damp shade and have no roots at all.")
    monkeypatch.setitem(sys.modules, "bs4", None)  # as if beautifulsoup4 were not installed: importing it fails
    found = read_folder(tmp_path, show_progress=False)
    assert list(found.skipped) == ["page.html"] and "pip install 'adapterkit[documents]'" in found.skipped["page.html"]


def test_two_store_objects_are_told_apart_and_no_password_is_shown(tmp_path):
    from types import SimpleNamespace

    from adapterkit.pipeline.sources import store_origin

    first = SimpleNamespace(connection_string="postgresql://me:secret@db.example/prod", table_name="chunks")
    second = SimpleNamespace(connection_string="postgresql://me:secret@db.example/prod", table_name="other_chunks")
    assert store_origin(first) != store_origin(second)
    assert "secret" not in store_origin(first) and "/chunks" in store_origin(first) and "db.example" in store_origin(first)
    # Qdrant: two servers, and two local folders, are two origins
    one, two = (
        SimpleNamespace(url="http://qdrant-a:6333", collection_name="c"),
        SimpleNamespace(url="http://qdrant-b:6333", collection_name="c"),
    )
    assert store_origin(one) != store_origin(two) and "qdrant-a" in store_origin(one)
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    here, there = (QdrantVectorStore(collection_name="c", client=QdrantClient(path=str(tmp_path / name))) for name in ("a", "b"))
    assert store_origin(here) != store_origin(there) and str(tmp_path / "a") in store_origin(here)
