"""The README's commands, run the way the README runs them, made small through their own parameters."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import take

ROOT = Path(__file__).resolve().parents[1]


def make_recipe(target: str) -> str:
    """The command lines of a Makefile target (``$(BIN)/python`` and friends left as written)."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert match, f"no target {target} in the Makefile"
    return match.group(1)


def test_make_walkthrough_and_report_run_these_entry_points():
    assert "$(BIN)/python -m adapterkit.notebook.walkthrough --output-dir reports" in make_recipe("walkthrough")
    assert "$(BIN)/python -m adapterkit.notebook.run_notebooks --output-dir reports" in make_recipe("report")


def run_module(module: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_walkthrough_end_to_end_on_a_slice(tmp_path):
    """``make walkthrough``'s entry point on the first 12 chunks of each set and notebook 01 on 2 pages."""
    out = tmp_path / "reports"
    proc = run_module(
        "adapterkit.notebook.walkthrough",
        "--output-dir",
        str(out),
        "--max-chunks",
        "12",
        "--epochs",
        "1",
        "--notebooks",
        "01",
        "-p",
        "max_pages",
        "2",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "| walkthrough script | ok |" in summary and "| 01_dataset | ok |" in summary
    assert "(first 12 chunks of each set)" in summary
    script = json.loads((out / "walkthrough" / "results.json").read_text())
    rows = script["tables"]["Uber questions"]["rows"]
    assert len(rows) == 4 and all(0 <= row[1] <= 1 for row in rows)  # base and three adapters, hit-rates
    for name in ("walkthrough_recipe", "adapterkit_defaults", "adapterkit_defaults_Uber_chunks_unlabelled"):
        assert (out / "walkthrough" / name / "config.json").is_file()
    assert (out / "walkthrough" / "adapterkit_defaults_Uber_chunks_unlabelled" / "memory").is_dir()
    assert "Question sets" in summary  # notebook 01's table reached the summary


@pytest.mark.slow
def test_a_failing_part_fails_the_walkthrough(tmp_path):
    proc = run_module("adapterkit.notebook.walkthrough", "--output-dir", str(tmp_path), "--max-chunks", "3", "--notebooks")
    assert proc.returncode == 1
    assert "max_chunks=3" in (tmp_path / "summary.md").read_text()


def test_make_report_entry_point_writes_the_summary(tmp_path):
    """``make report``'s entry point on a folder with one tiny notebook (notebook 01 runs through it above)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell('output_dir = "unset"', metadata={"tags": ["parameters"]}),
            new_code_cell(
                "from adapterkit.notebook.report import save_results\nimport pandas as pd\n"
                "save_results(output_dir, 'Tiny', tables={'t': pd.DataFrame({'v': [7]})})"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_tiny.ipynb")
    proc = run_module("adapterkit.notebook.run_notebooks", "--output-dir", str(tmp_path / "out"), "--notebooks-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 01_tiny | ok |" in summary and "| 7 |" in summary


@pytest.mark.slow
def test_readme_papermill_command_runs_notebook_02_with_a_parameter(tmp_path, train_full, val_full):
    """The notebooks guide's ``papermill notebooks/02_linear_adapter.ipynb out.ipynb -p adapter two_layer``, on a slice
    of the question sets (``data_source``: a folder as 01_dataset writes; nbval runs the whole notebook)."""
    data = tmp_path / "data"
    data.mkdir()
    take(train_full, 40).save_json(data / "train_dataset.json")
    take(val_full, 40).save_json(data / "val_dataset.json")
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "notebooks/02_linear_adapter.ipynb",
            str(out),
            "-p",
            "adapter",
            "two_layer",
            "-p",
            "data_source",
            str(data),
            "-p",
            "output_dir",
            str(tmp_path / "outputs"),
            "--cwd",
            "notebooks",
            "--no-progress-bar",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "outputs" / "results.json").read_text())
    rows = [row for table in results["tables"].values() for row in table["rows"]]
    assert any("two_layer adapter" in str(row[0]) for row in rows), rows  # the parameter reached the notebook


def test_make_notebooks_entry_point_refreshes_outputs_in_place(tmp_path):
    """``make notebooks`` = ``python -m adapterkit.notebook.run_notebooks --in-place`` (here on a tiny notebook)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_tiny.ipynb")
    assert "$(BIN)/python -m adapterkit.notebook.run_notebooks --in-place" in make_recipe("notebooks")
    proc = run_module("adapterkit.notebook.run_notebooks", "--in-place", "--notebooks-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert nbformat.read(tmp_path / "01_tiny.ipynb", as_version=4).cells[0].outputs[0]["text"] == "42\n"
