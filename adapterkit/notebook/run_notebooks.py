"""Run the walkthrough notebooks headless (papermill), or in place to refresh their stored outputs.

Each notebook in ``notebooks/`` is executed into ``<output-dir>/<name>.ipynb`` with
``output_dir=<output-dir>/<name>``; ``summary.md`` then collects every notebook's tables and plots
(``adapterkit.notebook.report``). The kernel is always this interpreter, whatever kernelspecs are installed. Run::

    python -m adapterkit.notebook.run_notebooks --output-dir reports
    python -m adapterkit.notebook.run_notebooks --output-dir reports --only 02 -p epochs 4
    python -m adapterkit.notebook.run_notebooks --in-place        # refresh the committed notebooks' outputs

Exit status 1 when a notebook fails (the summary says which, and the executed copy shows where).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from jupyter_client.manager import KernelManager

from adapterkit.data.files import REPO_ROOT
from adapterkit.notebook.report import write_summary

__all__ = ["NotebookRun", "execute_in_place", "find_notebooks", "parse_value", "run_notebooks", "main"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PathLike = Union[str, "os.PathLike[str]"]


class CurrentEnvKernelManager(KernelManager):
    """Starts notebook kernels with this interpreter (``sys.executable``), ignoring installed kernelspecs.

    The report and the committed outputs then always come from the environment that runs the report
    (a fresh ``.venv`` in CI), even where a user-level ``python3`` kernelspec points elsewhere.
    """

    @property
    def kernel_spec(self):
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
            nb.metadata.pop("widgets", None)  # widget state: model ids that change on every run, never rendered from the file
            nbformat.write(nb, nb_path)
        log(f"[in-place] {nb_path.name}: {'saved' if run.ok else 'FAILED (file left unchanged): ' + str(run.error)} in {run.seconds:.1f} s")
        runs.append(run)
    return runs


def parse_value(text: str) -> Any:
    """A command-line parameter value: a Python literal when it reads as one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="reports", help="where executed notebooks, outputs and summary.md go")
    parser.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help="folder of NN_*.ipynb notebooks")
    parser.add_argument("--only", nargs="*", default=[], help="run only notebooks whose name starts with / contains these (e.g. 02 03)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="papermill parameter for every notebook that has it (VALUE read as a Python literal)",
    )
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument(
        "--in-place", action="store_true", help="execute the notebooks in place with default parameters (refresh committed outputs)"
    )
    args = parser.parse_args(argv)
    notebooks = find_notebooks(args.notebooks_dir, args.only)
    if not notebooks:
        parser.error(f"no notebooks matched in {args.notebooks_dir}")
    if args.in_place:
        runs = execute_in_place(notebooks, timeout=args.timeout)
        return 0 if all(r.ok for r in runs) else 1
    params = {name: parse_value(value) for name, value in args.parameter}
    t0 = time.perf_counter()
    runs = run_notebooks(args.output_dir, notebooks, params, timeout=args.timeout)
    command = "python -m adapterkit.notebook.run_notebooks " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = write_summary(args.output_dir, runs, command=command.strip())
    print(f"[report] {len(runs)} notebooks in {time.perf_counter() - t0:.1f} s; summary: {summary}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
