"""Run recipes on (training side, target) tasks, print each table and write the report files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    cast,
)

import pandas as pd

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.evaluation.recipes import Recipe


def compare_recipes(
    train: EmbeddingQAFinetuneDataset,
    target: EmbeddingQAFinetuneDataset,
    recipes: Mapping[str, Recipe],
    model: Any,
    work: Path,
    log: Callable[[str], None] = print,
) -> Tuple[Dict[str, pd.DataFrame], Dict[str, dict]]:
    """``{name: evaluate frame}`` (``"base"`` first) and ``{name: notes}`` of every recipe on ``target``.

    A recipe that does not apply to the pair (it raises ``LookupError``) is left out, with a line in the log.
    """
    frames, notes = {"base": evaluate(target, model, top_k=10)}, {}
    for name, recipe in recipes.items():
        start = time.perf_counter()
        try:
            embed_model, doc_vectors, info = recipe(train, target, model, Path(work) / f"recipe-{len(frames)}")
        except LookupError as exc:
            log(f"{name}: skipped ({exc})")
            continue
        frames[name] = evaluate(target, embed_model, top_k=10, doc_vectors=doc_vectors)
        notes[name] = {**info, "seconds": round(time.perf_counter() - start, 1)}
        log(f"{name}: nDCG@10 {frames[name]['ndcg'].mean():.4f} (base {frames['base']['ndcg'].mean():.4f}) {notes[name]}")
    return frames, notes


def section(name: str, table: pd.DataFrame, notes: Mapping[str, dict]) -> str:
    """One task's comparison as markdown: a heading, the table, and each recipe's notes."""
    return f"### {name}\n\n" + table.to_markdown(index=False) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n"


def compare_tasks(
    tasks: Iterable[Tuple[str, EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset, Mapping[str, Recipe]]],
    model: Any,
    render: Callable[[str, pd.DataFrame, Mapping[str, dict]], str] = section,
) -> Tuple[List[str], Dict[str, dict]]:
    """``compare_recipes`` on each ``(name, train, target, recipes)`` (a generator loads one task at a time).

    Returns the rendered sections and ``{name: {"table": rows, "notes": notes}}``; engines' folders
    live in a temporary folder removed at the end.
    """
    sections, results = [], {}
    with tempfile.TemporaryDirectory(prefix="adapterkit-compare-") as work:
        for name, train, target, recipes in tasks:
            # cast: a lambda with a default argument (the task's name, bound now) gets no type from its context
            frames, notes = compare_recipes(
                train,
                target,
                recipes,
                model,
                Path(work) / name,
                log=cast(Callable[[str], None], lambda line, n=name: print(f"[{n}] {line}", flush=True)),
            )
            table = comparison_table(frames)
            results[name] = {"table": table.to_dict(orient="records"), "notes": notes}
            sections.append(render(name, table, notes))
    return sections, results


def write_report(output: Optional[str], title: str, command: str, sections: Sequence[str], results: Mapping[str, dict]) -> None:
    """Print the sections; with ``output``, write ``<output>.md`` (title, command, sections) and ``<output>.json``."""
    print("\n".join(sections))
    if output:
        Path(output + ".md").write_text(f"# {title}\n\n`{command}`\n\n" + "\n".join(sections))
        Path(output + ".json").write_text(json.dumps({**results, "provenance": provenance()}, indent=2, default=str) + "\n")


def provenance() -> Dict[str, Any]:
    """What made a result file: the commit (``+changes`` when the code differs from it), CPU, cores,
    date (UTC) and the versions that can move numbers. Every benchmark result file records it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # Result files written by earlier benchmarks in the same checkout do not change what is measured.
    if git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)benchmarks/results"):
        commit += "+changes"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import torch

    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
