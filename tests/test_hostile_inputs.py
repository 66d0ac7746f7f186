"""The command line as a careless user or an attacker drives it: inputs are never touched, options are
read by the registry before any work, links and URIs never reach what they should not, a folder's files
are data (never instructions), and Ctrl-C or a second run at any moment leaves the model folder whole."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import FAST, run, write_docs, write_questions

from adapterkit.data.folders import read_folder
from adapterkit.pipeline.output_folder import FolderLock, OutputFolderError, StagedFolder
from adapterkit.training.config import parse_options

FUZZ = settings(
    max_examples=int(os.environ.get("ADAPTERKIT_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tree(folder: Path) -> dict:
    """``{relative path: sha256}`` of every file under ``folder``: a folder left whole compares equal."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model folder fitted once on the six documents (with questions), reused read-only by the tests."""
    root = tmp_path_factory.mktemp("fitted")
    docs = write_docs(root / "docs")
    questions = write_questions(docs, root / "q.json")
    code = subprocess.run(
        [sys.executable, "-m", "adapterkit.cli", "fit", str(docs), "--out", str(root / "model"), "--questions", str(questions), *FAST],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr
    return root


def copy_of(fitted: Path, tmp_path: Path) -> Path:
    """A copy of the fitted project; its model folder records the copied documents folder as what it read."""
    shutil.copytree(fitted, tmp_path / "p", symlinks=True)
    manifest = tmp_path / "p" / "model" / "fit.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "origin": str((tmp_path / "p" / "docs").resolve())}, indent=1))
    return tmp_path / "p"


# --- inputs are never touched -------------------------------------------------------------------------------------


def test_documents_inside_the_model_folder_survive_overwrite(fitted, tmp_path, capsys):
    """A documents folder inside an existing model folder, --out that model folder, --overwrite: refused before
    anything is removed (the fit used to delete the documents and exit 0)."""
    root = copy_of(fitted, tmp_path)
    shutil.copytree(root / "docs", root / "model" / "docs")
    before = tree(root / "model")
    code, out, err = run(
        capsys, "fit", root / "model" / "docs", "--out", root / "model", "--questions", root / "q.json", "--overwrite", *FAST
    )
    assert code == 1 and "holds the documents folder" in err, err
    assert tree(root / "model") == before
    for out_folder in (root / "docs", root / "docs" / "sub" / "model"):  # the documents themselves, or a folder inside them
        code, out, err = run(capsys, "fit", root / "docs", "--out", out_folder, "--overwrite", *FAST)
        assert code == 1 and ("holds the documents folder" in err or "inside the documents folder" in err), err
    shutil.copy(root / "q.json", root / "model" / "q.json")
    code, out, err = run(
        capsys, "fit", root / "docs", "--out", root / "model", "--questions", root / "model" / "q.json", "--overwrite", *FAST
    )
    assert code == 1 and "holds the questions file" in err and (root / "model" / "q.json").is_file()
    code, out, err = run(
        capsys, "fit", root / "docs", "--out", tmp_path / "c", "--cache-dir", tmp_path / "c" / "cache", "--overwrite", *FAST
    )
    assert code == 1 and "holds the embedding cache" in err


@pytest.mark.integration
def test_a_folder_that_is_not_a_model_is_never_offered_overwrite(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("years of work")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "mine", *FAST)
    assert code == 1 and "not a model folder" in err and "Pass --overwrite" not in err
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "mine", "--overwrite", *FAST)
    assert code == 1 and "not a model folder" in err and (tmp_path / "mine" / "thesis.txt").read_text() == "years of work"


@pytest.mark.integration
def test_a_second_fit_into_a_locked_folder_names_the_first(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    with FolderLock(tmp_path / "model"):
        code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "model", *FAST)
    assert code == 1 and "being written by another fit (pid" in err and str(os.getpid()) in err
    assert not (tmp_path / "model").exists()


def test_a_fit_while_another_process_writes_the_folder_stops_and_names_it(fitted, tmp_path):
    """Another process holds the folder (as a running fit does): a real `adapterkit fit` into it stops at once with
    that process's pid, and leaves the folder as it was; once the holder ends, the same command succeeds."""
    root = copy_of(fitted, tmp_path)
    before = tree(root / "model")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom adapterkit.pipeline.output_folder import FolderLock\n"
            f"with FolderLock({str(root / 'model')!r}):\n    print('held', flush=True)\n    sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    command = [
        sys.executable,
        "-m",
        "adapterkit.cli",
        "fit",
        str(root / "docs"),
        "--out",
        str(root / "model"),
        "--questions",
        str(root / "q.json"),
        *FAST,
    ]
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 1 and f"being written by another fit (pid {holder.pid}" in second.stderr, second.stderr
    assert tree(root / "model") == before
    holder.communicate("done\n", timeout=60)
    third = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    assert not (root / ".model.fit-lock").exists() and not (root / ".model.fit-staging").exists()


@pytest.mark.parametrize("moment", ["reading", "training", "report", "commit"])
def test_ctrl_c_at_any_moment_leaves_the_previous_model_whole(fitted, tmp_path, capsys, monkeypatch, moment):
    """A re-run on changed documents cut off at each step: exit 130 with the message, and the model folder is
    exactly the previous one (never the new adapter beside the old report); the next run finishes."""
    import adapterkit.pipeline.fit as fit_module
    import adapterkit.pipeline.output_folder as output_folder

    root = copy_of(fitted, tmp_path)
    (root / "docs" / "bats.txt").write_text((root / "docs" / "bats.txt").read_text() + " They also eat insects.")
    before = tree(root / "model")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = {
        "reading": (fit_module, "source_of"),
        "training": (fit_module.EmbeddingAdapterFinetuneEngine, "finetune"),
        "report": (fit_module, "query_movement"),
        "commit": (output_folder, "_exchange"),
    }[moment]
    with monkeypatch.context() as patch:
        patch.setattr(*target, interrupt)
        code, out, err = run(capsys, "fit", root / "docs", "--out", root / "model", "--questions", root / "q.json", *FAST)
    assert code == 130 and "Interrupted" in err and "Traceback" not in err
    assert tree(root / "model") == before
    code, out, err = run(capsys, "fit", root / "docs", "--out", root / "model", "--questions", root / "q.json", *FAST)
    assert code == 0, err
    assert "1 changed" in out and not (root / ".model.fit-staging").exists()


def test_ctrl_c_while_the_command_starts(monkeypatch, capsys):
    import adapterkit.cli as cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "parser", interrupt)
    assert cli.main(["fit", "x", "--out", "y"]) == 130
    assert "Interrupted" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_to_a_running_fit_never_leaves_a_mixed_folder(fitted, tmp_path):
    """Real SIGINTs to `adapterkit fit` at several moments of a re-run: exit 130 (or 0 if it had finished) and the
    folder is the old one or the new one, whole: its report always describes its adapter."""
    root = copy_of(fitted, tmp_path)
    (root / "docs" / "comets.txt").write_text("CHUNK-6 Comets lose ice each orbit. " + (root / "docs" / "comets.txt").read_text())
    before = tree(root / "model")
    command = [
        sys.executable,
        "-m",
        "adapterkit.cli",
        "fit",
        str(root / "docs"),
        "--out",
        str(root / "model"),
        "--questions",
        str(root / "q.json"),
        *FAST,
    ]
    for delay in (0.2, 3.0, 6.0, 9.0):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        code, err = process.wait(timeout=600), process.stderr.read()
        # Python itself swallows (and prints) a Ctrl-C that lands inside a finalizer; the run then goes on to its end
        err = re.sub(r"Exception ignored in: .*?KeyboardInterrupt: ?\n", "", err, flags=re.S)
        # -SIGINT: Python ended itself by the signal after the message (a shell reports that as 130 too)
        assert code in (0, 130, -signal.SIGINT) and "Traceback" not in err, (delay, code, err)
        now = tree(root / "model")
        if code != 0:
            assert (
                now == before
                or json.loads((root / "model" / "fit.json").read_text())["chunks"]
                != json.loads((fitted / "model" / "fit.json").read_text())["chunks"]
            ), delay
        summary = json.loads((root / "model" / "report.json").read_text())
        assert summary["chunks"] == len(json.loads((root / "model" / "fit.json").read_text())["chunks"])


def test_a_staging_folder_that_is_not_a_fit_is_never_removed(tmp_path):
    (tmp_path / ".model.fit-staging").mkdir()
    (tmp_path / ".model.fit-staging" / "keep.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="is in the way"):
        StagedFolder(tmp_path / "model", "origin", "model", keep_previous=False)
    assert (tmp_path / ".model.fit-staging" / "keep.txt").read_text() == "mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "fit.json").write_text('{"origin": "origin", "embed_model": "model", "complete": true}')
    (tmp_path / ".other.fit-staging").symlink_to(tmp_path / "mine")  # a link there, even to a fit's folder
    with pytest.raises(OutputFolderError, match="is in the way"):
        StagedFolder(tmp_path / "other", "origin", "model", keep_previous=False)
    assert (tmp_path / "mine" / "fit.json").is_file()


def test_user_folders_beside_the_model_and_odd_spellings_of_it(tmp_path, monkeypatch):
    """A user's own `.model.fit-old` is never removed nor restored; `.` and `..` spellings name the real folder."""
    import adapterkit.pipeline.output_folder as output_folder

    (tmp_path / ".model.fit-old").mkdir()
    (tmp_path / ".model.fit-old" / "keep.txt").write_text("mine")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "fit.json").write_text('{"origin": "a", "embed_model": "m"}')
    monkeypatch.setattr(output_folder, "_exchange", lambda a, b: False)
    stage = StagedFolder(tmp_path / "x" / ".." / "model", "a", "m", keep_previous=False)
    assert stage.path == tmp_path / ".model.fit-staging"
    with pytest.raises(OutputFolderError, match="fit-old is in the way"):
        stage.commit()
    assert (tmp_path / ".model.fit-old" / "keep.txt").read_text() == "mine" and (tmp_path / "model" / "fit.json").is_file()
    monkeypatch.chdir(tmp_path / "model")
    assert FolderLock(".").path == tmp_path / ".model.fit-lock"
    with pytest.raises(OutputFolderError, match="root of the file system"):
        FolderLock("/")


def test_a_cut_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    """Where the OS has no atomic exchange, a cut between moving the old folder aside and the new one in is undone
    by the next run: the old folder comes back whole."""
    import adapterkit.pipeline.output_folder as output_folder

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "fit.json").write_text('{"origin": "a", "embed_model": "m"}')
    stage = StagedFolder(tmp_path / "model", "a", "m", keep_previous=False)
    (stage.path / "new.txt").write_text("new")
    monkeypatch.setattr(output_folder, "_exchange", lambda a, b: False)
    real_replace = os.replace
    calls = []

    def cut(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(output_folder.os, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        stage.commit()
    monkeypatch.setattr(output_folder.os, "replace", real_replace)
    assert not (tmp_path / "model").exists()
    StagedFolder(tmp_path / "model", "a", "m", keep_previous=False)
    assert json.loads((tmp_path / "model" / "fit.json").read_text())["origin"] == "a"


# --- options are read by the registry, before any work ------------------------------------------------------------


def test_set_values_are_read_by_their_type():
    assert parse_options({"guard": "False", "refit": "no", "shuffle": "0", "verbose": "YES"}) == {
        "guard": False,
        "refit": False,
        "shuffle": False,
        "verbose": True,
    }
    assert parse_options({"val_fraction": "0", "guard": "false", "refit": "false"})["val_fraction"] == 0.0
    assert parse_options({"memory_keys_per_chunk": "none", "map_sample": "100", "pseudo_query_words": "[3, 8]"}) == {
        "memory_keys_per_chunk": None,
        "map_sample": 100,
        "pseudo_query_words": (3, 8),
    }
    for pairs, message in (
        ({"guard": "False!"}, "true or false"),
        ({"epochs": "NaN"}, "whole number"),
        ({"epochs": "1.5"}, "whole number"),
        ({"seed": "abc"}, "seed takes a whole number"),
        ({"scale": "inf"}, "takes a number"),
        ({"corpus_memory": "False", "memory_keys_per_chunk": "2"}, "drop one of them"),
        ({"optimizer_params": '{"evil": 1}'}, "optimizer_params"),
        ({"optimizer_params": "[1]"}, "JSON object"),
        ({"optimizer_class": "os.system"}, "set it in Python"),
        ({"seed": "-1"}, "seed must be"),
        ({"epochs": "٣"}, "whole number"),
        ({"epochs": "1_0"}, "whole number"),
        ({"scale": "٣.٥"}, "takes a number"),
        ({"optimizer_params": '{"lr": 1e308}'}, "non-finite"),
        ({"num_threads": "99999999999"}, "num_threads"),
        ({"memory_temperature": "1e308"}, "memory_temperature"),
        ({"epochs": "99999999999999999999999"}, "epochs"),
        ({"seed": "1" * 5000}, "seed takes a whole number"),
        ({"scale": "1" * 5000}, "scale takes a number"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_options(pairs)


def test_bad_options_stop_before_any_work(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    for extra, message in (
        (["--set", "epochs=NaN"], "given as a flag (--epochs)"),  # FAST has --epochs 1: never silently overridden
        (["--set", "seed=abc"], "seed"),
        (["--set", 'optimizer_params={"evil": 1}'], "optimizer_params"),
        (["--set", "guard=maybe"], "true or false"),
        (["--set", "lr=2"], "not a training or chunking option"),
        (["--set", "scale=2", "--set", "scale=3"], "given twice"),
        (["--set", "checkpoint_save_steps=5"], "checkpoint_save_steps"),
    ):
        code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", *FAST, *extra)
        assert code == 1 and message in err and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "m").exists() and not (tmp_path / ".m.fit-staging").exists()  # no stub fit.json, nothing written
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--set", "epochs=2", *FAST)
    assert code == 1 and "given as a flag (--epochs) and as --set epochs" in err


@FUZZ
@given(
    pairs=st.dictionaries(
        st.sampled_from(
            [
                "epochs",
                "guard",
                "seed",
                "scale",
                "optimizer_params",
                "map_sample",
                "pseudo_query_words",
                "memory_keys_per_chunk",
                "negatives",
                "question_memory_weights",
                "nope",
                "chunk_size",
            ]
        ),
        st.text(max_size=12),
        max_size=4,
    )
)
def test_fuzz_set_options_end_in_values_or_a_named_error(pairs):
    try:
        values = parse_options(pairs, extra={"chunk_size": int})
    except ValueError as exc:
        assert any(name in str(exc) for name in pairs) or "optimizer_params" in str(exc) or "drop one" in str(exc), str(exc)
        return
    assert set(values) == set(pairs)


@FUZZ
@given(
    sets=st.lists(
        st.tuples(
            st.sampled_from(
                ["epochs", "guard", "seed", "batch_size", "memory_weight", "chunk_size", "optimizer_params", "val_fraction", "x"]
            ),
            st.text(max_size=10),
        ),
        max_size=3,
    ),
    flag=st.sampled_from([[], ["--epochs", "1"], ["--epochs", "-1"]]),
)
def test_fuzz_the_fit_command_line_stops_with_a_message_before_any_work(tmp_path_factory, capsys, sets, flag):
    """Any --set values on the command line: exit 1 or 2 with a message, no traceback, nothing written. (A last
    check, --eval-chunks without --llm, stops every run that gets past the options, so no fit runs here.)"""
    from adapterkit.cli import main

    where = tmp_path_factory.mktemp("cli")
    argv = ["fit", str(where / "docs"), "--out", str(where / "m"), "--eval-chunks", "5", "--quiet", *flag]
    argv += [a for key, value in sets for a in ("--set", f"{key}={value}")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err, (argv, err)
    assert list(where.iterdir()) == []


# --- folders: links, and files that are data ----------------------------------------------------------------------


def test_links_out_of_the_folder_are_skipped_and_listed(tmp_path):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "secret.txt").write_text("PRIVATE the payroll of every employee, which must never be embedded or sent to an LLM.")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "more.txt").write_text("PRIVATE notes kept outside the documents folder for a good reason.")
    (docs / "innocent.txt").symlink_to(tmp_path / "secret.txt")
    (docs / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (docs / "loop").symlink_to(docs, target_is_directory=True)  # a link back into the folder: no endless walk
    (docs / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (docs / "bats-again.txt").symlink_to(docs / "bats.txt")  # a link inside the folder is read
    found = read_folder(docs, show_progress=False)
    assert not any("PRIVATE" in text for text in found.corpus.values())
    assert "outside the folder" in found.skipped["innocent.txt"] and "outside the folder" in found.skipped["linked"]
    assert "does not exist" in found.skipped["dangling.txt"] and "bats-again.txt" in found.files
    assert not any(name.startswith("loop/") for name in found.files)
    followed = read_folder(docs, show_progress=False, follow_symlinks=True)
    assert {"innocent.txt", "linked/more.txt"} <= set(followed.files)


@pytest.mark.integration
def test_fit_lists_skipped_links(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "secret.txt").write_text("PRIVATE payroll")
    (docs / "innocent.txt").symlink_to(tmp_path / "secret.txt")
    questions = write_questions(docs, tmp_path / "q.json")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--questions", questions, *FAST)
    assert code == 0, err
    assert "Skipped 1 file(s)" in out and "innocent.txt" in out
    report = (tmp_path / "m" / "report.md").read_text()
    assert "outside the folder" in report
    assert ("serves this folder's adapter alone, without its memory" in report) == (tmp_path / "m" / "memory").is_dir()


@FUZZ
@given(
    names=st.lists(
        st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=12),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    contents=st.lists(st.binary(max_size=300), min_size=5, max_size=5),
)
def test_fuzz_any_folder_reads_or_says_why(tmp_path_factory, names, contents):
    folder = tmp_path_factory.mktemp("fuzz")
    for name, data in zip(names, contents):
        if name in (".", ".."):
            continue
        try:
            (folder / name).write_bytes(data)
        except OSError:  # a name the file system refuses
            continue
    try:
        found = read_folder(folder, show_progress=False)
    except Exception as exc:
        assert type(exc).__name__ == "DocumentFolderError", repr(exc)
        return
    assert found.nodes and set(found.files) | set(found.skipped) <= {n for n in names}


# --- URIs -----------------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_qdrant_uris_that_lead_nowhere_are_errors(tmp_path, capsys):
    (tmp_path / "not-qdrant").mkdir()
    for uri, message in (
        ("qdrant+http://127.0.0.1:1?collection=c", "Could not reach the Qdrant store"),
        (f"qdrant:///{tmp_path}/does/not/exist?collection=c", "there is no Qdrant folder"),
        (f"qdrant:///{tmp_path}/not-qdrant?collection=c", "there is no Qdrant folder"),
        ("qdrant+http://?collection=c", "names no server"),
    ):
        code, out, err = run(capsys, "fit", "--store", uri, "--out", tmp_path / "m", *FAST)
        assert code == 1 and message in err and "Traceback" not in err, (uri, err)
    assert not (tmp_path / "does").exists() and list((tmp_path / "not-qdrant").iterdir()) == []


@FUZZ
@given(
    uri=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda scheme, rest: f"{scheme}{rest}",
            st.sampled_from(["qdrant://", "qdrant:///", "qdrant+http://", "postgresql://", "postgres://", "mysql://", ""]),
            st.text(max_size=40),
        ),
    )
)
def test_fuzz_store_uris_open_or_say_why(tmp_path_factory, monkeypatch, uri):
    from adapterkit.pipeline.sources import close_store, open_store

    where = tmp_path_factory.mktemp("uri")
    monkeypatch.chdir(where)  # a relative qdrant path would land here: nothing may be created
    try:
        store = open_store(uri)
    except (ValueError, ConnectionError, ImportError):
        assert list(where.iterdir()) == []
        return
    close_store(store)  # a postgresql URI builds a store object without connecting; nothing is created either
    assert list(where.iterdir()) == []


# --- a model folder's files are data ---------------------------------------------------------------------------------


def test_a_damaged_fit_json_is_named(fitted, tmp_path, capsys):
    root = copy_of(fitted, tmp_path)
    manifest = root / "model" / "fit.json"
    good = json.loads(manifest.read_text())
    for damaged in ("{not json", "[]", json.dumps({**good, "files": 1}), json.dumps({**good, "chunks": 5}), json.dumps({"origin": 3})):
        manifest.write_text(damaged)
        code, out, err = run(capsys, "fit", root / "docs", "--out", root / "model", "--questions", root / "q.json", *FAST)
        assert code == 1 and "fit.json is damaged" in err and "--overwrite" in err and "not iterable" not in err, err
        code, out, err = run(capsys, "eval", root / "model", root / "q.json")
        assert code == 1 and "fit.json is damaged" in err, err
    code, out, err = run(capsys, "fit", root / "docs", "--out", root / "model", "--questions", root / "q.json", "--overwrite", *FAST)
    assert code == 0, err


def test_eval_never_loads_a_model_the_folder_names(fitted, tmp_path, capsys):
    root = copy_of(fitted, tmp_path)
    manifest = root / "model" / "fit.json"
    for spec in ("openai:text-embedding-3-large", "hf:someone/remote-code-model", f"local:{tmp_path}/weights"):
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "embed_spec": spec}))
        code, out, err = run(capsys, "eval", root / "model", root / "q.json")
        assert code == 1 and "loads only the package's own models" in err and f"--embed-model {spec}" in err, err
    code, out, err = run(capsys, "eval", root / "model", root / "q.json", "--embed-model", "default")
    assert code == 0, err


# --- found by attacking the surfaces above --------------------------------------------------------------------------


@pytest.mark.integration
def test_the_lock_path_is_never_written_through_a_link_or_over_a_file(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "important.txt").write_text("important data")
    (tmp_path / ".m.fit-lock").symlink_to(tmp_path / "important.txt")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", *FAST)
    assert code == 1 and "fit-lock is in the way" in err and (tmp_path / "important.txt").read_text() == "important data"
    (tmp_path / ".m.fit-lock").unlink()
    (tmp_path / ".m.fit-lock").write_text("my notes")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", *FAST)
    assert code == 1 and "fit-lock is in the way" in err and (tmp_path / ".m.fit-lock").read_text() == "my notes"


@pytest.mark.integration
def test_a_failed_run_leaves_no_lock_and_no_staging(tmp_path, capsys, monkeypatch):
    import adapterkit.pipeline.fit as fit_module

    docs = write_docs(tmp_path / "docs")
    questions = write_questions(docs, tmp_path / "q.json")
    for extra in (["--set", "map_sample=0"], ["--set", "chunk_size=-5"], ["--set", "chunk_overlap=5000"]):
        code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", *FAST, *extra)
        assert code == 1 and "Traceback" not in err, (extra, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "q.json"], extra

    def fail(*args, **kwargs):
        raise ValueError("the training data is not usable")

    monkeypatch.setattr(fit_module.EmbeddingAdapterFinetuneEngine, "finetune", fail)
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "m", "--questions", questions, *FAST)
    assert code == 1 and "not usable" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "q.json"]  # no model, no lock, no staging


def test_an_output_folder_inside_the_cache_or_a_local_store_is_refused(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    code, out, err = run(capsys, "fit", docs, "--out", tmp_path / "cache" / "model", "--cache-dir", tmp_path / "cache", *FAST)
    assert code == 1 and "inside the embedding cache" in err and not (tmp_path / "cache" / "model").exists()


def test_a_damaged_config_or_base_model_record_is_named(fitted, tmp_path, capsys):
    root = copy_of(fitted, tmp_path)
    config = root / "model" / "config.json"
    good = json.loads(config.read_text())
    for damaged in ({**good, "out_features": -1}, {**good, "in_features": 10**12, "out_features": 10**12}):
        config.write_text(json.dumps(damaged))
        code, out, err = run(capsys, "eval", root / "model", root / "q.json")
        assert code == 1 and "config.json" in err and "Traceback" not in err, err
    config.write_text(json.dumps(good))
    record = root / "model" / "base_model.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "dim": 10}))
    code, out, err = run(capsys, "eval", root / "model", root / "q.json")
    assert code == 1 and "base_model.json says its base model makes 10-dimensional vectors" in err, err


def test_a_finished_command_ignores_a_late_ctrl_c(monkeypatch):
    """Once the work is done, a Ctrl-C while Python shuts down must not turn success into 130."""
    import argparse

    import adapterkit.cli as cli

    monkeypatch.setattr(
        cli, "parser", lambda: argparse.Namespace(parse_args=lambda argv: argparse.Namespace(run=lambda a: None, command="x"))
    )
    before = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main() == 0 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert cli.main(["x"]) == 0 and signal.getsignal(signal.SIGINT) is before  # a caller's argv: its handler is left alone


def test_pipes_and_devices_in_a_folder_are_listed_never_read(tmp_path):
    docs = write_docs(tmp_path / "docs")
    os.mkfifo(docs / "pipe.txt")
    (docs / "zero.txt").symlink_to("/dev/zero")
    found = read_folder(docs, show_progress=False, follow_symlinks=True)
    assert "not a regular file" in found.skipped["pipe.txt"] and "not a regular file" in found.skipped["zero.txt"]


def test_a_folder_the_local_server_would_mishandle_is_refused_before_it_starts(tmp_path):
    """The server's scripts pass the folder through a shell unquoted: a path with a space or & would split or run."""
    from adapterkit.stores.postgres import LocalPostgres, LocalPostgresError

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "notes.txt").write_text("mine")
    for folder, problem in (
        (tmp_path / "with space", "shell"),
        (tmp_path / "x&touch pwned", "shell"),
        (tmp_path / "q;id", "shell"),
        (tmp_path / "a_file", "is a file"),
        (tmp_path / "others", "not a PostgreSQL data folder"),
    ):
        with pytest.raises(LocalPostgresError, match=problem):
            LocalPostgres(folder).start()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "others"]  # nothing created, nothing run
    assert [p.name for p in (tmp_path / "others").iterdir()] == ["notes.txt"]
