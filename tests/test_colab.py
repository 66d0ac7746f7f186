"""The Colab install cell and the one repository URL it shares with pyproject.toml and the notebooks guide."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("colab_tool", ROOT / "tools" / "colab.py")
colab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab)


def test_committed_places_agree():
    assert colab.check() == 0
    assert (
        len(colab.urls()) == 2 + len(colab.NOTEBOOKS) == 2 + len(list((ROOT / "notebooks").glob("*.ipynb")))
    )  # every notebook has the cell


def test_set_url_stamps_every_place(tmp_path, monkeypatch):
    guide = colab.NOTEBOOKS_GUIDE
    (tmp_path / guide).parent.mkdir(parents=True)
    for name in ("pyproject.toml", guide):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("outputs"))
    monkeypatch.setattr(colab, "ROOT", tmp_path)
    monkeypatch.setattr(colab, "NOTEBOOKS", sorted((tmp_path / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    (tmp_path / "pyproject.toml").write_text((tmp_path / "pyproject.toml").read_text().replace("OWNER", "someone-else"))
    assert colab.check() == 1  # drifted: pyproject differs from the cells and badges
    (tmp_path / guide).write_text((tmp_path / guide).read_text().replace("<!-- /colab-badges -->", ""))
    with pytest.raises(ValueError, match="notebooks.md: expected one match"):
        colab.set_url("https://github.com/alice/adapterkit")  # a broken place is named, nothing is written
    assert "someone-else" in (tmp_path / "pyproject.toml").read_text()
    shutil.copy(ROOT / guide, tmp_path / guide)
    colab.set_url("https://github.com/alice/adapterkit/")
    assert set(colab.urls().values()) == {"https://github.com/alice/adapterkit"}
    readme = (tmp_path / guide).read_text()
    assert "colab.research.google.com/github/alice/adapterkit/blob/main/notebooks/05_use_without_reindexing.ipynb" in readme
    nb = json.loads((tmp_path / "notebooks" / "02_linear_adapter.ipynb").read_text())
    assert "https://github.com/alice/adapterkit" in "".join(colab.install_cell(nb)["source"])


def run_install_cell(monkeypatch, in_colab: bool, repo: str | None) -> list:
    """Execute notebook 01's first cell as IPython would; record the shell commands instead of running them."""
    source = "".join(colab.install_cell(json.loads(colab.NOTEBOOKS[0].read_text()))["source"])
    calls: list = []
    namespace: dict = {}
    # IPython expands {name} in a magic's line from the user namespace before running it.
    shell = types.SimpleNamespace(run_line_magic=lambda name, line, *_: calls.append((name, line.format(**namespace))))
    namespace["get_ipython"] = lambda: shell
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(("widgets",)))
    if in_colab:
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if repo is None:
        monkeypatch.delenv("ADAPTERKIT_REPO", raising=False)
    else:
        monkeypatch.setenv("ADAPTERKIT_REPO", repo)
    exec(TransformerManager().transform_cell(source), namespace)
    return calls


def test_install_cell_does_nothing_outside_colab(monkeypatch):
    assert run_install_cell(monkeypatch, in_colab=False, repo=None) == []


def test_install_cell_installs_from_the_repository_url(monkeypatch):
    calls = run_install_cell(monkeypatch, in_colab=True, repo="https://github.com/alice/adapterkit")
    assert calls == [("pip", 'install -q "adapterkit[notebooks] @ git+https://github.com/alice/adapterkit"'), ("widgets",)]


def test_install_cell_refuses_the_placeholder(monkeypatch):
    if colab.urls()["pyproject.toml"] != colab.PLACEHOLDER:
        pytest.skip("the repository URL has been set")
    with pytest.raises(RuntimeError, match="set-url"):
        run_install_cell(monkeypatch, in_colab=True, repo=None)
