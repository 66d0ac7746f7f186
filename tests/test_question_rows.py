"""Questions a person can write (question, file, quote), the chunk listing, and what a fit does with them."""

import csv
import json
import re

import pytest

from adapterkit.data.datasets import DatasetError
from adapterkit.data.folders import read_folder
from adapterkit.data.question_rows import read_rows, resolve_rows
from tests.test_cli import QUESTIONS, TOPICS, run, write_docs

LONG = " ".join(f"CHUNK-{100 + i} Sentence number {i} of the long guide talks about topic {i} in plain words." for i in range(60))


@pytest.fixture
def docs(tmp_path):
    folder = write_docs(tmp_path / "docs")
    (folder / "guide.txt").write_text(LONG)
    return folder


def rows_of(docs):
    return [{"question": QUESTIONS[f], "file": f, "quote": TOPICS[f].split("CHUNK-")[1][2:60]} for f in QUESTIONS]


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["question", "file", "quote"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_every_format_places_each_question_on_the_chunk_that_holds_its_quote(tmp_path, docs, suffix):
    found = read_folder(docs, show_progress=False)
    dataset, missing = resolve_rows(read_rows(write(tmp_path / f"q{suffix}", rows_of(docs))), found.corpus, found.chunks_of)
    assert not missing and len(dataset.queries) == 6
    for qid, question in dataset.queries.items():
        file = next(f for f, q in QUESTIONS.items() if q == question)
        assert dataset.relevant_docs[qid] == found.chunks_of[file]


def test_a_quote_is_matched_across_line_breaks_and_letter_case_and_can_name_several_chunks(tmp_path, docs):
    found = read_folder(docs, chunk_size=60, chunk_overlap=30, show_progress=False)
    guide = found.chunks_of["guide.txt"]
    assert len(guide) > 3
    # a passage inside the overlap of two neighbouring chunks is in both: both are relevant
    shared = next(s for s in LONG.split(". ") if sum(s in found.corpus[c] for c in guide) >= 2)
    holders = [c for c in guide if shared in found.corpus[c]]
    rows = [
        {"question": "q1", "file": "guide.txt", "quote": shared.upper().replace(" ", "\n  ")},
        {"question": "q2", "file": "guide.txt"},  # no quote: any chunk of the file answers it
        {"question": "q3", "file": "guide.txt", "quote": "a passage the guide does not hold"},
        {"question": "q4", "file": "no/such/file.md"},
        {"question": "q2", "file": "bats.txt"},
    ]  # answered in a second place too
    dataset, missing = resolve_rows(read_rows(write(tmp_path / "q.jsonl", rows)), found.corpus, found.chunks_of)
    by_text = {t: dataset.relevant_docs[q] for q, t in dataset.queries.items()}
    assert by_text["q1"] == holders and len(holders) >= 2
    assert by_text["q2"] == guide + found.chunks_of["bats.txt"]
    assert set(missing) == {"q3", "q4"} and "quote is in no chunk of guide.txt" in missing["q3"] and "no file" in missing["q4"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "q", "file": "a.txt", "answer": "x"}\n', "field(s) ['answer']"),
        ('{"question": "q"}\n', "needs a question and the file"),
        ('{"question": 3, "file": "a.txt"}\n', "must be text"),
        ("not json\n", "line 1 is not a JSON object"),
        ("[1, 2]\n", "is not an object"),
        ("\n\n", "holds no questions"),
    ],
)
def test_a_bad_row_is_named_with_the_fix(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_rows(path)


def test_bad_files_are_named(tmp_path, docs):
    with pytest.raises(DatasetError, match="not found"):
        read_rows(tmp_path / "missing.jsonl")
    (tmp_path / "q.txt").write_text("question,file\n")
    with pytest.raises(DatasetError, match=r"\.jsonl, \.csv or \.json"):
        read_rows(tmp_path / "q.txt")
    (tmp_path / "latin.csv").write_bytes("question,file\nQu'est-ce qu'un caf\xe9?,bees.md\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_rows(tmp_path / "latin.csv")
    found = read_folder(docs, show_progress=False)
    nowhere = write(tmp_path / "nowhere.jsonl", [{"question": "q", "file": "elsewhere.txt"}])
    with pytest.raises(DatasetError, match="No question could be placed"):
        resolve_rows(read_rows(nowhere), found.corpus, found.chunks_of)


def test_chunks_lists_every_chunk_with_its_file_and_first_words(docs, capsys):
    code, out, err = run(capsys, "chunks", docs)
    assert code == 0, err
    lines = out.splitlines()
    found = read_folder(docs, show_progress=False)
    assert lines[0] == "chunk id\tfile\tfirst words" and len(lines) == 1 + len(found.nodes)
    listed = {line.split("\t")[0]: line.split("\t")[1] for line in lines[1:]}
    assert listed == {c: f for f, ids in found.chunks_of.items() for c in ids}
    assert any(line.endswith("CHUNK-4 Honey bees communicate the direction of flowers with a waggle dance") for line in lines)
    code, small, err = run(capsys, "chunks", docs, "--chunk-size", "60", "--chunk-overlap", "10")
    assert code == 0 and len(small.splitlines()) > len(lines)
    code, out, err = run(capsys, "chunks", docs, "--chunk-size", "50", "--chunk-overlap", "50")
    assert code == 1 and "chunk_overlap" in err


@pytest.mark.slow
def test_fit_and_eval_take_question_rows_and_the_report_says_what_happened(tmp_path, docs, capsys):
    rows = rows_of(docs) + [{"question": "What does the guide say?", "file": "guide.txt", "quote": "not in the guide at all"}]
    questions = write(tmp_path / "q.jsonl", rows)
    model = tmp_path / "model"
    code, out, err = run(
        capsys, "fit", docs, "--out", model, "--questions", questions, "--cache-dir", tmp_path / "cache", *("--epochs", "1", "--quiet")
    )
    assert code == 0, err
    first = out.splitlines()[0]
    summary = json.loads((model / "report.json").read_text())
    epoch = summary["guard"]["best_epoch"]
    kept = f"Kept: the adapter of epoch {epoch}" if epoch else "Kept: the base model"
    assert first.startswith(kept) and "a memory of your chunks' sentences" in first, first  # what was kept, as report.json says
    assert "labelled questions showed no clear gain" in first and "On 1 held-out questions: MRR@5" in first
    assert "1 of your questions were left out" in out and "What does the guide say?" in out
    report = (model / "report.md").read_text().splitlines()
    assert report[2] == f"**{summary['verdict']}**"
    assert report[4].startswith("Trained on: the walkthrough's published Lyft 2021 10-K questions (668 questions over 334 chunks)")
    assert "5 of your questions, as evidence for a memory of them" in report[4]
    assert "- 'What does the guide say?': row 7: the quote is in no chunk of guide.txt" in "\n".join(report)
    assert summary["evaluation"]["left_out"] == {
        "What does the guide say?": "row 7: the quote is in no chunk of guide.txt (it must be an exact passage, within one chunk)"
    }
    # a cold cache: the base model embedded this folder's chunks and nothing of the published questions
    found = read_folder(docs, show_progress=False)
    assert summary["embedded_by_base_model"]["text"] == len(found.nodes)
    assert json.loads((model / "fit.json").read_text())["chunk_size"] == 1024

    code, out, err = run(capsys, "eval", model, questions, "--quiet")
    assert code == 1 and "--docs DOCS_DIR" in err
    code, out, err = run(capsys, "eval", model, questions, "--docs", docs, "--quiet")
    assert code == 0, err
    assert json.loads((model / "eval" / "eval.json").read_text())["table"][1]["model"] == "adapter"


def test_questions_writes_rows_that_place_each_question_back_on_its_chunk(tmp_path, docs, capsys, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{fake_openai.server_port}/v1")
    out = tmp_path / "questions.jsonl"
    code, stdout, err = run(
        capsys,
        "questions",
        docs,
        "--llm",
        "openai:gpt-4o-mini",
        "--out",
        out,
        "--yes",
        "--quiet",
        "--chunk-size",
        "256",
        "--chunk-overlap",
        "60",
        "--workers",
        "1",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(rows[0]) == {"question", "file", "quote"}
    found = read_folder(docs, chunk_size=256, chunk_overlap=60, show_progress=False)
    assert len(found.chunks_of["guide.txt"]) >= 3
    dataset, missing = resolve_rows(read_rows(out), found.corpus, found.chunks_of)
    assert not missing and len(dataset.queries) == len(rows) == 2 * len(found.nodes)
    assert all(len(docs_) == 1 for docs_ in dataset.relevant_docs.values())  # each quote names its chunk alone
    code, stdout, err = run(capsys, "questions", docs, "--out", tmp_path / "q.txt", "--yes", "--quiet")
    assert code == 1 and ".jsonl or .csv" in err


@pytest.mark.slow
def test_the_reports_serving_code_runs_on_an_index_the_index_command_builds(tmp_path, docs, capsys):
    model = tmp_path / "model"
    cache = ("--cache-dir", tmp_path / "cache")
    assert run(capsys, "fit", docs, "--out", model, *cache, "--epochs", "1", "--quiet")[0] == 0
    report = (model / "report.md").read_text()
    command = next(line for line in report.splitlines() if line.startswith("adapterkit index "))
    import shlex

    argv = shlex.split(command)[1:]
    code, out, err = run(capsys, *argv, *cache, "--quiet")
    assert code == 0, err
    found = read_folder(docs, show_progress=False)
    assert f"Indexed {len(found.nodes)} chunks of 7 files" in out
    assert run(capsys, *argv, *cache, "--quiet")[0] == 0  # a re-run replaces its rows, never doubles them
    code = report.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "report.md", "exec"), scope)  # the report's own lines, as a user pastes them
    hits = scope["retriever"].retrieve(QUESTIONS["notes/glaciers.html"])
    assert hits[0].node.node_id == found.chunks_of["notes/glaciers.html"][0]
    assert len(hits) == 5 and len({h.node.node_id for h in hits}) == 5
    store = scope["vector_store"]
    assert store.client.count(store.collection_name).count == len(found.nodes)
    store.client.close()


@pytest.mark.slow
def test_index_writes_a_postgres_table_that_fit_then_reads_without_embedding(tmp_path, docs, capsys):
    from adapterkit.stores.postgres import LocalPostgres

    found = read_folder(docs, show_progress=False)
    cache = ("--cache-dir", tmp_path / "cache")
    with LocalPostgres() as pg:
        uri = f"postgresql://postgres@/postgres?host={pg.socket_dir}&table=indexed"
        for _ in range(2):  # the second run replaces the first run's rows
            code, out, err = run(capsys, "index", docs, "--store", uri, *cache, "--quiet")
            assert code == 0, err
        counts = pg.psql('SELECT count(*), count(DISTINCT node_id) FROM public."data_indexed"')
        rows = re.search(r"^\s*(\d+)\s*\|\s*(\d+)\s*$", counts, re.M)
        assert rows and rows.groups() == (str(len(found.nodes)),) * 2, counts
        code, out, err = run(capsys, "index", docs, "--store", uri + "&embed_dim=768", *cache, "--quiet")
        assert code == 1 and "embed_dim=384" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("question,file,quote\nQ1,a.txt,two years,EXTRA\n", "more values than the header"),
        ("question,file,question\nQ1,a.txt,Q2\n", "names ['question'] twice"),
    ],
)
def test_malformed_csv_is_named(tmp_path, content, message):
    path = tmp_path / "q.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_rows(path)


def test_jsonl_rows_keep_unusual_line_breaks_and_refuse_duplicate_keys_and_broken_unicode(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Line\u2028sep\x85question", "file": "a.txt"}, ensure_ascii=False) + "\n")
    assert read_rows(path)[0].question == "Line\u2028sep\x85question"
    path.write_text('{"question": "a", "question": "b", "file": "a.txt"}\n')
    with pytest.raises(DatasetError, match="given twice"):
        read_rows(path)
    path.write_text('{"question": "bad \\ud800 q", "file": "a.txt"}\n')
    with pytest.raises(DatasetError, match="row 1 holds broken Unicode"):
        read_rows(path)


def test_a_pipe_or_a_device_is_refused_without_reading_it(tmp_path, docs):
    import os
    import signal

    from adapterkit.data.question_rows import is_dataset_json

    os.mkfifo(tmp_path / "f.json")
    (tmp_path / "z.json").symlink_to("/dev/zero")
    (tmp_path / "d.jsonl").mkdir()
    signal.alarm(20)  # a regression would block on the pipe: fail instead of hanging the run
    try:
        for name in ("f.json", "z.json", "d.jsonl"):
            with pytest.raises(DatasetError, match="not a regular file"):
                is_dataset_json(tmp_path / name) if name.endswith(".json") else read_rows(tmp_path / name)
    finally:
        signal.alarm(0)


def test_a_single_row_object_is_told_to_be_a_list(tmp_path, docs, capsys):
    path = tmp_path / "q.json"
    path.write_text('{"question": "How do bees tell where flowers are?", "file": "bees.md"}')
    with pytest.raises(DatasetError, match=r"must be a list of question objects"):
        read_rows(path)


def test_file_names_and_quotes_match_in_any_unicode_form_and_skipped_files_say_why(tmp_path):
    import unicodedata

    docs = tmp_path / "docs"
    docs.mkdir()
    nfd = unicodedata.normalize("NFD", "Café.txt")
    (docs / nfd).write_text("The caf\u0065\u0301 serves e\ufb03cient espresso every morning before the market opens.")
    (docs / "notes.log").write_text("not read")
    found = read_folder(docs, show_progress=False)
    rows = write(
        tmp_path / "q.jsonl",
        [
            {"question": "What does the café serve?", "file": "Café.txt", "quote": "THE CAFÉ serves efficient espresso"},
            {"question": "What is in the log?", "file": "notes.log"},
        ],
    )
    dataset, missing = resolve_rows(read_rows(rows), found.corpus, found.chunks_of, found.skipped)
    assert list(dataset.queries.values()) == ["What does the café serve?"]
    assert "notes.log was skipped (unsupported file type .log)" in missing["What is in the log?"]


def test_a_question_with_an_unplaced_row_is_left_out_whole(tmp_path, docs):
    found = read_folder(docs, show_progress=False)
    rows = write(
        tmp_path / "q.jsonl", [{"question": "same", "file": "bats.txt"}, {"question": "same", "file": "bees.md", "quote": "not in bees.md"}]
    )
    with pytest.raises(DatasetError, match="No question could be placed"):
        resolve_rows(read_rows(rows), found.corpus, found.chunks_of)


def test_a_questions_file_inside_the_documents_is_refused(tmp_path, docs, capsys):
    inside = write(docs / "questions.csv", rows_of(docs))
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "model", "--questions", inside, "--quiet")
    assert code == 1 and "inside the documents folder" in err and not (tmp_path / "model").exists()
    code, out, err = run(capsys, "questions", docs, "--out", docs / "more.jsonl", "--yes", "--quiet")
    assert code == 1 and "inside the documents folder" in err


def test_questions_never_overwrite_a_file_they_did_not_write_and_check_counts(tmp_path, docs, capsys, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{fake_openai.server_port}/v1")
    mine = write(tmp_path / "mine.jsonl", rows_of(docs))
    before = mine.read_text()
    code, out, err = run(capsys, "questions", docs, "--llm", "openai:gpt-4o-mini", "--out", mine, "--yes", "--quiet")
    assert code == 1 and "written by hand" in err and mine.read_text() == before and fake_openai.requests == 0
    code, out, err = run(
        capsys, "questions", docs, "--llm", "openai:gpt-4o-mini", "--out", tmp_path / "new.jsonl", "--per-chunk", "0", "--yes", "--quiet"
    )
    assert code == 1 and "--per-chunk" in err and fake_openai.requests == 0
    code, out, err = run(capsys, "chunks", docs, "--words", "0")
    assert code == 1 and "--words" in err


@pytest.mark.integration
def test_index_checks_the_store_before_embedding_and_replaces_what_it_wrote(tmp_path, docs, capsys):
    from adapterkit.cache import EmbeddingCache

    cache = tmp_path / "cache"
    code, out, err = run(capsys, "index", docs, "--store", f"qdrant://{tmp_path}/qd", "--cache-dir", cache, "--quiet")
    assert code == 1 and "name the collection" in err and len(EmbeddingCache(cache)) == 0  # nothing embedded for a bad URI
    code, out, err = run(capsys, "index", docs, "--store", "postgresql://me:secret@127.0.0.1:1/db?table=t", "--cache-dir", cache, "--quiet")
    assert code == 1 and "Could not connect" in err and "secret" not in err and len(EmbeddingCache(cache)) == 0
    uri = f"qdrant://{tmp_path}/qd?collection=docs"
    assert run(capsys, "index", docs, "--store", uri, "--cache-dir", cache, "--quiet")[0] == 0
    (docs / "bees.md").write_text(TOPICS["bees.md"] + " Drones leave the hive to mate.")
    (docs / "comets.txt").unlink()
    assert run(capsys, "index", docs, "--store", uri, "--cache-dir", cache, "--quiet", "--chunk-size", "64", "--chunk-overlap", "8")[0] == 0
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qd"))
    try:
        stored = {p.id for p in client.scroll("docs", limit=1000)[0]}
    finally:
        client.close()
    expected = set(read_folder(docs, chunk_size=64, chunk_overlap=8, show_progress=False).corpus)
    assert stored == expected  # the edited, removed and re-chunked files left nothing stale behind


def test_the_first_line_names_what_was_kept_and_why():
    from types import SimpleNamespace

    from adapterkit.pipeline.report import verdict

    group = SimpleNamespace(val_idx=[0, 1, 2])
    bare = SimpleNamespace(best_epoch=0, memories={}, groups=[group, group], memory_choice=None)
    result = SimpleNamespace(database_memory=None, table=None, evaluation=None)
    assert verdict(bare, result).startswith(
        "Kept: the base model unchanged (no training epoch beat the start by more than its standard error on 6 held-out training queries)."
    )
    trained = SimpleNamespace(
        best_epoch=4,
        memories={"sentences": 1, "questions": 1},
        groups=[group],
        memory_choice={
            "held_out_questions": 12,
            "default": "0.0/0.0/0.25",
            "question_weight": 0.5,
            "question_temperature": 20.0,
            "sentence_weight": 0.25,
        },
    )
    line = verdict(trained, result)
    assert line.startswith("Kept: the adapter of epoch 4 and a memory of your questions and a memory of your chunks' sentences")
    assert "your 12 labelled questions gained clearly from a memory of them" in line and "give --questions or --llm" in line
