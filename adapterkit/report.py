"""Run the walkthrough notebooks headless and write a one-page report.

Each notebook in ``notebooks/`` is executed by papermill into ``<output-dir>/<name>.ipynb`` with
``output_dir=<output-dir>/<name>``; there it writes ``results.json`` (its result tables, via
``save_results``) and its plots as PNGs. ``summary.md`` then collects every table and plot on one page.
The kernel is always this interpreter, whatever kernelspecs are installed. Run::

    python -m adapterkit.report --output-dir reports
    python -m adapterkit.report --output-dir reports --only 02 -p epochs 4
    python -m adapterkit.report --in-place        # refresh the committed notebooks' outputs

Exit status 1 when a notebook fails (the summary says which, and the executed copy shows where).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from jupyter_client.manager import KernelManager

from adapterkit.data import REPO_ROOT

__all__ = ["NotebookRun", "execute_in_place", "find_notebooks", "run_notebooks", "save_results", "write_summary", "main"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
RESULTS_NAME = "results.json"
PathLike = Union[str, "os.PathLike[str]"]


class CurrentEnvKernelManager(KernelManager):
    """Starts notebook kernels with this interpreter (``sys.executable``), ignoring installed kernelspecs.

    The report and the committed outputs then always come from the environment that runs the report
    (a fresh ``.venv`` in CI), even where a user-level ``python3`` kernelspec points elsewhere.
    """

    @property
    def kernel_spec(self):  # type: ignore[override]
        if self._kernel_spec is None:
            from ipykernel.kernelspec import RESOURCES, get_kernel_dict
            from jupyter_client.kernelspec import KernelSpec

            self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())
        return self._kernel_spec


def find_notebooks(folder: PathLike = NOTEBOOKS_DIR, only: Sequence[str] = ()) -> List[Path]:
    """``NN_*.ipynb`` in ``folder``, in order; ``only`` keeps those whose name starts with or contains one of its items."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) or o in p.stem for o in only)]
    return found


# ----------------------------------------------------------------------------------------------
# What a notebook hands to the report
# ----------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def save_results(
    output_dir: PathLike,
    title: str,
    tables: Mapping[str, Any],
    figures: Mapping[str, Any] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write ``<output_dir>/results.json`` for the report: tables, figure files and notes.

    Args:
        output_dir: the notebook's output folder.
        title: the notebook's heading in the summary.
        tables: ``{caption: DataFrame}``.
        figures: ``{caption: Figure or PNG path}``; Figures are saved as ``<slug>.png`` in ``output_dir``.
        notes: lines shown under the title (e.g. what was published and not re-measured).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_entries = []
    for caption, fig in dict(figures).items():
        if hasattr(fig, "savefig"):
            from adapterkit.plots import save_figure

            path = save_figure(fig, out / (re.sub(r"[^a-z0-9]+", "_", caption.lower()).strip("_") + ".png"))
        else:
            path = Path(fig)
        fig_entries.append({"caption": caption, "file": os.path.relpath(Path(path).resolve(), out.resolve())})
    payload = {
        "title": title,
        "notes": list(notes),
        "tables": {
            caption: {
                "columns": [str(c) for c in df.columns],
                "rows": [[_jsonable(v) for v in row] for row in df.itertuples(index=False, name=None)],
            }
            for caption, df in tables.items()
        },
        "figures": fig_entries,
    }
    target = out / RESULTS_NAME
    target.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    return target


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """One executed notebook: where its copy and outputs are, how long it took, and whether it failed."""

    name: str
    notebook: Path
    output_dir: Path
    seconds: float = 0.0
    error: Optional[str] = None
    parameters: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def run_notebooks(
    output_dir: PathLike = "reports",
    notebooks: Optional[Sequence[PathLike]] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    timeout: Optional[int] = None,
    log: Any = print,
) -> List[NotebookRun]:
    """Execute each notebook with papermill into ``output_dir``; go on after a failure.

    Args:
        output_dir: gets ``<name>.ipynb`` (executed copy) and ``<name>/`` (the notebook's ``output_dir``).
        notebooks: paths (default: every ``NN_*.ipynb`` in ``notebooks/``).
        parameters: extra papermill parameters for every notebook (``output_dir`` is set per notebook).
        timeout: seconds per cell (None: no limit).
    """
    import papermill as pm

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for nb in [Path(p).resolve() for p in (notebooks if notebooks is not None else find_notebooks())]:
        run = NotebookRun(nb.stem, out / nb.name, out / nb.stem)
        run.parameters = {**(parameters or {}), "output_dir": str(run.output_dir)}
        known = set(pm.inspect_notebook(str(nb)))
        unknown = sorted(set(parameters or {}) - known)
        run.parameters = {k: v for k, v in run.parameters.items() if k in known}
        log(f"[report] {nb.name}" + (f" (not a parameter here: {', '.join(unknown)})" if unknown else ""))
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(run.notebook),
                parameters=run.parameters,
                cwd=str(nb.parent),
                progress_bar=False,
                execution_timeout=timeout,
                kernel_manager_class=CurrentEnvKernelManager,
            )
        except Exception as exc:  # PapermillExecutionError and friends: record it, run the rest
            run.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        run.seconds = time.perf_counter() - t0
        log(f"[report] {nb.name}: {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s")
        runs.append(run)
    return runs


def execute_in_place(notebooks: Optional[Sequence[PathLike]] = None, timeout: Optional[int] = None, log: Any = print) -> List[NotebookRun]:
    """Execute notebooks with their default parameters and save the outputs into the same files.

    This is how the committed outputs (which ``pytest --nbval`` compares against) are refreshed; it
    uses nbclient directly, so no papermill metadata or injected cells end up in the files.
    """
    import nbformat
    from nbclient import NotebookClient

    runs = []
    for nb_path in [Path(p).resolve() for p in (notebooks if notebooks is not None else find_notebooks())]:
        nb = nbformat.read(nb_path, as_version=4)
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        run = NotebookRun(nb_path.stem, nb_path, nb_path.parent)
        log(f"[in-place] {nb_path.name}")
        t0 = time.perf_counter()
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_manager_class=CurrentEnvKernelManager,
            resources={"metadata": {"path": str(nb_path.parent)}},
        )
        try:
            client.execute()
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        run.seconds = time.perf_counter() - t0
        if run.ok:
            nbformat.write(nb, nb_path)
        log(f"[in-place] {nb_path.name}: {'saved' if run.ok else 'FAILED (file left unchanged): ' + str(run.error)} in {run.seconds:.1f} s")
        runs.append(run)
    return runs


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (no dependency on tabulate)."""
    lines = ["| " + " | ".join(_fmt(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(output_dir: PathLike, runs: Sequence[NotebookRun], command: str = "python -m adapterkit.report") -> Path:
    """Write ``<output_dir>/summary.md``: run status and time per notebook, then each notebook's tables and plots."""
    out = Path(output_dir).resolve()
    lines = [
        "# adapterkit walkthrough report",
        "",
        f"Generated by `{command}`: the notebooks in `notebooks/`, run headless with papermill "
        "(train on the Lyft 2021 10-K questions, evaluate on the Uber 2021 10-K questions).",
        "",
        markdown_table(
            ["notebook", "status", "seconds", "executed copy"],
            [[r.name, "ok" if r.ok else f"FAILED: {r.error}", round(r.seconds, 1), f"[{r.notebook.name}]({r.notebook.name})"] for r in runs],
        ),
        "",
        f"Total: {sum(r.seconds for r in runs):.1f} s.",
    ]
    combined = combined_results(runs)
    if combined:
        lines += ["", "## All models on the Uber questions", "", markdown_table(["notebook", "retrievers", "hit_rate", "mrr", "source"], combined)]
    for run in runs:
        results = run.output_dir / RESULTS_NAME
        if not results.is_file():
            lines += ["", f"## {run.name}", "", "_No results (the notebook failed or saved none)._"]
            continue
        data = json.loads(results.read_text(encoding="utf-8"))
        lines += ["", f"## {run.name}: {data.get('title', '')}"]
        for note in data.get("notes", []):
            lines += ["", f"> {note}"]
        for caption, table in data.get("tables", {}).items():
            lines += ["", f"**{caption}**", "", markdown_table(table["columns"], table["rows"])]
        figures = data.get("figures", [])
        if figures:
            lines.append("")
            for fig in figures:
                rel = os.path.relpath(run.output_dir / fig["file"], out)
                lines.append(f"![{fig['caption']}]({Path(rel).as_posix()})")
    target = out / "summary.md"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def combined_results(runs: Sequence[NotebookRun]) -> List[List[Any]]:
    """One row per model across all notebooks' metric tables (a model shown twice is listed once)."""
    rows, seen = [], set()
    for run in runs:
        results = run.output_dir / RESULTS_NAME
        if not results.is_file():
            continue
        for table in json.loads(results.read_text(encoding="utf-8")).get("tables", {}).values():
            cols = table["columns"]
            if not {"retrievers", "hit_rate", "mrr"} <= set(cols):
                continue
            for row in table["rows"]:
                record = dict(zip(cols, row))
                if record["retrievers"] not in seen:
                    seen.add(record["retrievers"])
                    rows.append([run.name, record["retrievers"], record["hit_rate"], record["mrr"], record.get("source", "measured")])
    return rows


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="reports", help="where executed notebooks, outputs and summary.md go")
    parser.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help="folder of NN_*.ipynb notebooks")
    parser.add_argument("--only", nargs="*", default=[], help="run only notebooks whose name starts with / contains these (e.g. 02 03)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="papermill parameter for every notebook that has it (VALUE read as a Python literal)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument("--in-place", action="store_true", help="execute the notebooks in place with default parameters (refresh committed outputs)")
    args = parser.parse_args(argv)
    notebooks = find_notebooks(args.notebooks_dir, args.only)
    if not notebooks:
        parser.error(f"no notebooks matched in {args.notebooks_dir}")
    if args.in_place:
        runs = execute_in_place(notebooks, timeout=args.timeout)
        return 0 if all(r.ok for r in runs) else 1
    params = {name: _parse_value(value) for name, value in args.parameter}
    t0 = time.perf_counter()
    runs = run_notebooks(args.output_dir, notebooks, params, timeout=args.timeout)
    command = "python -m adapterkit.report " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = write_summary(args.output_dir, runs, command=command.strip())
    print(f"[report] {len(runs)} notebooks in {time.perf_counter() - t0:.1f} s; summary: {summary}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
