"""Every figure in the README and docs/ is its results file's, filled by tools/fill_docs.py; the front page stays a front page."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fill_docs", ROOT / "tools" / "fill_docs.py")
fill = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fill)


def test_every_quoted_figure_equals_its_results_file():
    stale = [p.relative_to(ROOT).as_posix() for p in fill.documents() if fill.render(p.read_text()) != p.read_text()]
    assert not stale, f"figures differ from benchmarks/results/ in {stale}: run python tools/fill_docs.py"


def test_a_figure_typed_over_or_a_results_file_remade_is_caught(tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    monkeypatch.setattr(fill, "RESULTS", results)
    page = "Cold fit: <!--fig folder_fit_scifact runs.without questions.seconds-->{}<!--/fig--> s."
    value = json.loads((results / "folder_fit_scifact.json").read_text())["runs"]["without questions"]["seconds"]
    assert fill.render(page.format(value)) == page.format(value)
    assert fill.render(page.format(value + 1)) == page.format(value)  # a hand-typed figure is rewritten
    data = json.loads((results / "folder_fit_scifact.json").read_text())
    data["runs"]["without questions"]["seconds"] = value * 2
    data["provenance"]["commit"] = "0000000"
    (results / "folder_fit_scifact.json").write_text(json.dumps(data))
    assert fill.render(page.format(value)) == page.format(value * 2)  # a re-made result moves the doc
    table = "<!--table front-->\nold\n<!--/table-->"
    assert "commit `0000000`" not in fill.render(table)
    suite = json.loads((results / "suite.json").read_text())
    suite["provenance"]["commit"] = "0000000"
    (results / "suite.json").write_text(json.dumps(suite))
    assert "commit `0000000`" in fill.render(table)  # the commit named is the results file's own


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A copy of the results folder the tool reads, to tamper with."""
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", copy)
    monkeypatch.setattr(fill, "RESULTS", copy)
    (tmp_path / "secret.json").write_text('{"v": "SECRET"}')
    (tmp_path / "secret.md").write_text("SECRET")
    return copy


@pytest.mark.parametrize(
    "marker",
    [
        "<!--fig ../secret v-->x<!--/fig-->",
        "<!--fig /tmp/secret v-->x<!--/fig-->",
        "<!--include ../secret.md-->\nx\n<!--/include-->",
        "<!--include /etc/hostname-->\nx\n<!--/include-->",
        "<!--fig suite .-->x<!--/fig-->",  # the whole file
        "<!--fig suite provenance-->x<!--/fig-->",  # an object, not a value
        "<!--fig suite provenance.cpu|1000000-->x<!--/fig-->",  # a width
        "<!--fig suite provenance.cpu|.2f-->x<!--/fig-->",  # a number's format on text
        "<!--fig suite lyft-uber.table.99999.ndcg@10-->x<!--/fig-->",
        "<!--fig suite lyft-uber.table.[nosuchkey=None].ndcg@10-->x<!--/fig-->",
        "A<!--fig suite provenance.commit-->1<!--fig suite provenance.date-->2<!--/fig-->3<!--/fig-->B",  # nested
    ],
)
def test_a_marker_reads_only_one_plain_value_of_the_results(results, marker):
    with pytest.raises(fill.FigureError):
        fill.render(marker)


@pytest.mark.parametrize(
    "content",
    [
        '{"v": "1<!--/fig--> <!--include secret.md-->\\n<!--/include-->"}',  # a value that would add markers
        '{"v": "<script>alert(1)</script>"}',
        '{"v": NaN}',
        "[" * 5000 + "]" * 5000,  # deeper than the JSON reader goes
        "not json",
        "\xff\xfe",  # not UTF-8
    ],
)
def test_a_tampered_results_file_is_refused_by_name(results, content):
    (results / "evil.json").write_text(content, encoding="latin-1")
    with pytest.raises(fill.FigureError):
        fill.render("<!--fig evil v-->old<!--/fig-->")


def test_a_results_table_holding_a_marker_or_a_table_built_from_bad_data_is_refused(results):
    (results / "evil.md").write_text("# t\n| a |\n<!--/include-->\nextra\n")
    with pytest.raises(fill.FigureError, match="marker"):
        fill.render("<!--include evil.md-->\n<!--/include-->")
    data = json.loads((results / "folder_fit_scifact.json").read_text())
    data["chunks"] = 0
    (results / "folder_fit_scifact.json").write_text(json.dumps(data))
    with pytest.raises(fill.FigureError, match="million"):
        fill.render("<!--table million-->\n<!--/table-->")


def test_the_tool_writes_no_page_when_one_fails_and_never_through_a_link(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    good = "Cold: <!--fig folder_fit_scifact chunks-->0<!--/fig-->\n"
    (root / "README.md").write_text(good)
    (root / "docs" / "bad.md").write_text("<!--fig nothing x-->0<!--/fig-->\n")
    outside = tmp_path / "outside.md"
    outside.write_text(good)
    (root / "docs" / "link.md").symlink_to(outside)
    monkeypatch.setattr(fill, "ROOT", root)
    monkeypatch.setattr(sys, "argv", ["fill_docs.py"])
    assert fill.main() == 2 and "fill_docs: " in capsys.readouterr().err
    assert (root / "README.md").read_text() == good  # nothing written: one page failed
    (root / "docs" / "bad.md").unlink()
    assert fill.main() == 0
    assert (root / "README.md").read_text() != good and outside.read_text() == good  # the link's target is never written


@pytest.mark.parametrize(
    "marker, problem",
    [
        ("<!--fig no_such_file a.b-->1<!--/fig-->", "does not exist"),
        ("<!--fig suite lyft-uber.nothing-->1<!--/fig-->", "no 'nothing'"),
        ("<!--fig suite lyft-uber.table.[model=nobody].ndcg@10-->1<!--/fig-->", "0 rows match"),
        ("<!--table nothing-->\n<!--/table-->", "no table 'nothing'"),
        ("<!--include nothing.md-->\n<!--/include-->", "does not exist"),
    ],
)
def test_a_marker_that_names_nothing_is_an_error(marker, problem):
    with pytest.raises(fill.FigureError, match=problem):
        fill.render(marker)


def test_the_front_page_is_short_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 10_000, len(readme)
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links, "the README links to the docs"
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_the_api_reference_names_every_public_name():
    import adapterkit

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    documented = set(re.findall(r"^::: [\w.]+\.(\w+)$", page, re.M))
    assert documented == set(adapterkit.__all__) - {"__version__"}


def test_the_options_page_lists_every_option_once_with_what_it_does_and_the_few_users_set_first():
    import dataclasses

    from adapterkit.cli import SET_BY_USERS
    from adapterkit.training.config import USER_OPTIONS, FinetuneConfig

    notes = fill.option_notes()
    fields = [f.name for f in dataclasses.fields(FinetuneConfig)]
    assert set(notes) == set(fields) and all(len(notes[name]) > 10 for name in fields)  # every option says what it does
    page = (ROOT / "docs" / "reference" / "options.md").read_text()
    listed = re.findall(r"^\| `(\w+)` \|", page, re.M)
    assert sorted(listed) == sorted(fields)  # each once
    assert set(listed[: len(USER_OPTIONS)]) == USER_OPTIONS == set(SET_BY_USERS)  # the ones users set come first, and --help names them
    assert len(USER_OPTIONS) <= 10
