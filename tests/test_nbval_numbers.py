"""nbval with the root conftest: float rounding passes, a real change in a metric fails."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(root_conftest)
numbers_match = root_conftest.numbers_match


def test_numbers_match_rules():
    assert numbers_match("hit_rate 0.7987 mrr 0.6607", "hit_rate 0.7999 mrr 0.6600", 0.002)
    assert not numbers_match("hit_rate 0.7987", "hit_rate 0.8017", 0.002)  # a change of 0.003
    assert not numbers_match("395 nodes", "396 nodes", 0.002)  # integers are exact...
    assert numbers_match("151 queries", "152 queries", 0.002, count_share=0.01)  # ...unless counts may move
    assert not numbers_match("151 queries", "160 queries", 0.002, count_share=0.01)
    assert not numbers_match("hit_rate 0.7987", "mrr 0.7987", 0.002)  # the words still count
    assert not numbers_match("0.1 0.2", "0.1", 0.002)


def _notebook(path: Path, printed: str, stored: str, tags=()) -> None:
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", execution_count=1, metadata={"tags": list(tags)})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored + "\n")]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)


@pytest.mark.slow
def test_nbval_tolerates_rounding_and_catches_regressions(tmp_path):
    cases = {
        "rounding": ("hit_rate 0.7975 mrr 0.6612", "hit_rate 0.7987 mrr 0.6607", ()),
        "regression": ("hit_rate 0.7957 mrr 0.6607", "hit_rate 0.7987 mrr 0.6607", ()),
        "count": ("rank improved 152", "rank improved 151", ()),
        "tagged_count": ("rank improved 152", "rank improved 151", (root_conftest.COUNTS_TAG,)),
    }
    for name, (printed, stored, tags) in cases.items():
        _notebook(tmp_path / f"{name}.ipynb", printed, stored, tags)
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-rA",
            "-o",
            "addopts=",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcome = {
        name: ("PASSED" if f"PASSED {name}.ipynb" in done.stdout else "FAILED" if f"FAILED {name}.ipynb" in done.stdout else "?")
        for name in cases
    }
    assert outcome == {"rounding": "PASSED", "regression": "FAILED", "count": "FAILED", "tagged_count": "PASSED"}, done.stdout[-3000:]
