"""Fill the figures of README.md and docs/ from benchmarks/results/, so no figure is typed by hand.

Three kinds of marked spans, each rewritten from a results file (the markers are HTML comments,
invisible on GitHub and in the docs site):

- ``<!--fig FILE PATH-->0.7783<!--/fig-->``: one value of ``benchmarks/results/FILE.json``. PATH is
  dotted keys and list indexes; ``[key=value]`` picks the row of a list whose ``key`` is ``value``
  (``[a=x&b=y]``: both);
  a trailing ``|.2f`` (any format spec) formats a number.
- ``<!--include FILE.md-->...<!--/include-->``: a benchmark's own markdown table (the benchmark
  writes its ``.md`` and ``.json`` together), without its title line.
- ``<!--table NAME-->...<!--/table-->``: a table built here from several files (``TABLES``).

Run ``python tools/fill_docs.py`` after a benchmark; ``--check`` exits 1 naming every file whose
figures differ from their results files (``tests/test_docs_figures.py`` runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIG = re.compile(r"<!--fig (\S+) ([^|>]+?)(?:\|([^>]*))?-->(.*?)<!--/fig-->", re.S)
INCLUDE = re.compile(r"(<!--include (\S+)-->\n)(.*?)(<!--/include-->)", re.S)
TABLE = re.compile(r"(<!--table (\S+)-->\n)(.*?)(<!--/table-->)", re.S)


NAME = re.compile(r"[A-Za-z0-9_]+")  # a results file's name: nothing outside benchmarks/results/ can be named
SPEC = re.compile(r",?(\.\d{1,2})?[dfeg%]?")  # the format specs a figure may take: no widths, fills or nesting


class FigureError(ValueError):
    """A marker names a file or a path that the results do not hold, or a results file holds what no page may show."""


def load(name: str) -> Any:
    if not NAME.fullmatch(name):
        raise FigureError(f"{name!r} is not a results file's name (letters, digits and _ only, without .json).")
    path = RESULTS / f"{name}.json"
    if not path.is_file() or path.is_symlink():
        raise FigureError(f"{path} does not exist: run the benchmark that writes it, or fix the marker.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FigureError(f"{path} is not a results file ({type(exc).__name__}): run its benchmark again.") from None


def shown(value: Any, where: str) -> str:
    """A value as a page shows it; markup, non-finite numbers and whole objects are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FigureError(f"{where} is {type(value).__name__}, not a number or text: name one value.")
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise FigureError(f"{where} is {text}: a results file should hold finite numbers.")
    if "<" in text or ">" in text:
        raise FigureError(f"{where} holds markup ({text[:60]!r}): a page shows only plain values.")
    return text


def lookup(data: Any, path: str, where: str) -> Any:
    parts = re.findall(r"\[[^\]]+\]|[^.\[]+", path)
    if not parts:
        raise FigureError(f"{where}: {path!r} names no value.")
    for part in parts:
        if part.startswith("["):
            wants = [c.partition("=")[::2] for c in part[1:-1].split("&")]
            rows = (
                [r for r in data if isinstance(r, dict) and all(k in r and str(r[k]) == v for k, v in wants)]
                if isinstance(data, list)
                else []
            )
            if len(rows) != 1:
                raise FigureError(f"{where}: {len(rows)} rows match {part} (need exactly one).")
            data = rows[0]
        elif isinstance(data, list) and re.fullmatch(r"[0-9]+", part) and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            raise FigureError(f"{where}: no {part!r} under {path!r}.")
    return data


def figure(name: str, path: str, spec: str = "") -> str:
    where = f"{name}.json {path.strip()}"
    value = lookup(load(name), path.strip(), f"{name}.json")
    if spec:
        if not SPEC.fullmatch(spec) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FigureError(f"{where}: the format {spec!r} takes a number and one of , .N d f e g %.")
        try:
            value = format(value, spec)
        except ValueError as exc:
            raise FigureError(f"{where}: {exc}.") from None
    return shown(value, where)


def included(name: str) -> str:
    if not name.endswith(".md") or not NAME.fullmatch(name[:-3]):
        raise FigureError(f"{name!r} is not a results table's name (letters, digits and _, then .md).")
    path = RESULTS / name
    if not path.is_file() or path.is_symlink():
        raise FigureError(f"{path} does not exist: run the benchmark that writes it, or fix the marker.")
    try:
        text = path.read_text(encoding="utf-8")
    except ValueError:
        raise FigureError(f"{path} is not UTF-8 text: run its benchmark again.") from None
    if "<!--" in text:
        raise FigureError(f"{path} holds a marker or comment: a results table is plain markdown.")
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip() + "\n"


def provenance_line(*names: str) -> str:
    seen = []
    for name in names:
        p = load(name)["provenance"]
        line = f"commit `{p['commit']}`, {p['cpu']}, {p['cores']} cores, {p['date']}"
        if line not in seen:
            seen.append(line)
    return "; ".join(seen)


def front_table() -> str:
    """The front page: base, LlamaIndex's recipe and the defaults on the four pairs, ada-002 as published."""
    suite, published = load("suite"), load("published")
    pairs = {
        "lyft-uber": "Lyft → Uber",
        "scifact-scifact": "SciFact train → test",
        "lyft-scifact": "Lyft → SciFact",
        "scifact-uber": "SciFact → Uber",
    }
    rows = {
        "base": "base model (bge-small-en-v1.5)",
        "walkthrough recipe (4 epochs)": "LlamaIndex's walkthrough recipe",
        "defaults": "**adapterkit defaults**",
    }
    out = [
        "| model | Uber hit@5 | Uber MRR@5 | " + " | ".join(f"nDCG@10 {p}" for p in pairs.values()) + " |",
        "|---" * (3 + len(pairs)) + "|",
    ]
    for key, label in rows.items():
        first = lookup(suite, f"lyft-uber.table.[model={key}]", "suite.json")
        cells = [f"{first['hit@5']:.4f}", f"{first['mrr@5']:.4f}"]
        for pair in pairs:
            row = lookup(suite, f"{pair}.table.[model={key}]", "suite.json")
            cells.append(f"{row['ndcg@10']:.4f}" + (f" ({row['Δndcg@10']} {row['Δndcg@10 95%']})" if row["Δndcg@10"] else ""))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    ada = published["ada-002"]
    out.append(f"| OpenAI ada-002, as published by the walkthrough | {ada['hit@5']:.4f} | {ada['mrr@5']:.4f} |" + " – |" * len(pairs))
    out.append("")
    out.append(
        f"Measured by `{suite.get('command', 'python benchmarks/suite.py --output benchmarks/results/suite')}` "
        f"({provenance_line('suite')})."
    )
    return "\n".join(out) + "\n"


def scale_table() -> str:
    """PostgreSQL + pgvector at 100k to 10M chunks (``benchmarks/bench_pgvector.py``), the memory in its present layout."""
    sizes = {"100k": "100k chunks", "400k": "400k chunks", "1m": "1M chunks", "4m": "4M chunks", "10m": "10M chunks"}
    runs = {size: load(f"pgvector_scale_{size}") for size in sizes}
    for run in runs.values():  # what a million chunks cost on the server's disk
        run["memory_db_mb_per_million"] = round(run["memory_db_mb"] / run["chunks"] * 1e6)
        run["store_precision"] = "half" if run.get("store_half") else "single"

    def cell(run: Dict[str, Any], *keys: str, unit: str = "") -> str:
        if any(k not in run for k in keys):
            return "not built"
        return ", ".join(
            f"{run[k]:,}{unit if i == 0 else ''}" if isinstance(run[k], int) else f"{run[k]}{unit if i == 0 else ''}"
            for i, k in enumerate(keys)
        )

    rows = [
        ("the store's table: MB, its vectors' precision", ("table_mb", "store_precision")),
        ("write the chunks (COPY), s", ("write_copy_s",)),
        ("read every vector once (streamed), s", ("read_stream_s",)),
        ("read for training (the pairs' chunks and the sample), s", ("read_for_training_s",)),
        ("train (1 epoch), s", ("train_s",)),
        ("memory in the database: build s, size MB", ("memory_db_build_s", "memory_db_mb")),
        ("memory in the database per million chunks, MB", ("memory_db_mb_per_million",)),
        (
            "memory's IVFFlat index: lists, probes chosen at the build, recall on sampled keys",
            ("memory_db_lists", "memory_db_probes", "memory_db_measured_recall"),
        ),
        ("memory lookup in the database: ms per query, recall@10 vs exact", ("memory_db_ms_per_lookup", "memory_db_recall@10")),
        (
            "the same memory local (`.npy` + faiss): ms per query, recall@10",
            ("memory_local_faiss_ms_per_lookup", "memory_local_faiss_recall@10"),
        ),
        ("2,000 queries exact over the streamed vectors, s", ("exact_eval_streamed_s",)),
        ("server data folder, MB", ("server_data_mb",)),
        ("peak RSS of this process, MB", ("peak_rss_mb",)),
        ("local memory's own process (faiss index in RAM), MB", ("memory_local_peak_rss_mb",)),
    ]
    out = ["| | " + " | ".join(sizes.values()) + " |", "|---" * (1 + len(sizes)) + "|"]
    out += [f"| {label} | " + " | ".join(cell(runs[size], *keys) for size in sizes) + " |" for label, keys in rows]
    out += [
        "",
        "Made by `python benchmarks/bench_pgvector.py --chunks N --output benchmarks/results/pgvector_scale_<n>`, "
        f"the options each `.md` there names ({provenance_line(*(f'pgvector_scale_{size}' for size in sizes))}).",
    ]
    return "\n".join(out) + "\n"


def cross_model_table() -> str:
    """MRR@5 of a new query model over an old model's index, against both ceilings (``benchmarks/cross_model.py``)."""
    data = load("cross_model")
    names = {"MiniLM-L6": "MiniLM", "bge-small": "bge"}
    out = [
        "| OLD index, NEW queries | OLD only | ceiling 1: NEW re-embeds every chunk | ceiling 2: re-embed and adapt "
        "| the map alone (10% of the chunks) | the map alone, generic text too | map refined by the defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench in ("uber", "scifact"):
        for old, new in (("MiniLM-L6", "bge-small"), ("bge-small", "MiniLM-L6")):
            rows = [r for r in data["rows"] if (r["benchmark"], r["old"], r["new"]) == (bench, old, new)]

            def pick(start: str, end: str = "") -> Dict[str, Any]:
                found = [r for r in rows if r["method"].startswith(start) and r["method"].endswith(end)]
                if len(found) != 1:
                    raise FigureError(f"cross_model.json: {len(found)} rows of {bench} {old}->{new} {start!r}...{end!r}.")
                return found[0]

            def shares(row: Dict[str, Any]) -> str:
                return f"{row['mrr@5']:.4f} ({row['recovered']:.1%} / {row['recovered_of_adapted']:.1%})"

            alone = [r for r in rows if r["method"].startswith("map alone: ") and r["method"].split()[3] == "query"]
            alone = [r for r in alone if r["method"].endswith("+ 10% of the corpus")]
            if len(alone) != 1:
                raise FigureError(f"cross_model.json: {len(alone)} rows of {bench} {old}->{new} for the map alone at 10%.")
            out.append(
                f"| {'Uber' if bench == 'uber' else 'SciFact'}: {names[old]} index, {names[new]} queries "
                f"| {pick('OLD only')['mrr@5']:.4f} | {pick('NEW everywhere')['mrr@5']:.4f} | {pick('re-embed and adapt')['mrr@5']:.4f} "
                f"| {shares(alone[0])} | {shares(pick('map alone: generic text', '+ 10% of the corpus'))} "
                f"| **{shares(pick('map refined'))}** |"
            )
    out += [
        "",
        "In brackets: the share of ceiling 1 / ceiling 2.",
        "",
        f"Made by `python benchmarks/cross_model.py --output benchmarks/results/cross_model` ({provenance_line('cross_model')}).",
    ]
    return "\n".join(out) + "\n"


def cli_help() -> str:
    """``adapterkit --help`` and each command's ``--help``, as the command prints them."""
    import os

    from adapterkit.cli import parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: one width wherever this runs
    top = parser()
    commands = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction").choices
    out = ["```text", top.format_help().rstrip(), "```"]
    for name, sub in commands.items():
        out += ["", f"## `adapterkit {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(out) + "\n"


def million_chunks() -> str:
    """What a million chunks cost, scaled from the cold folder fit (``benchmarks/folder_fit.py``)."""
    fit = load("folder_fit_scifact")
    run, embedded = fit["runs"]["without questions"], fit["embedded"]["without questions"]
    texts = embedded["text"] + embedded["query"]
    hours = run["seconds"] / fit["chunks"] * 1e6 / 3600
    return (
        f"A cold `fit` of {fit['chunks']} SciFact abstracts embedded {texts:,} texts (the chunks, their sentences and "
        f"pseudo-queries) and took {run['seconds']} s in all ({provenance_line('folder_fit_scifact')}). At that rate a "
        f"million such chunks take about {hours:,.0f} hours on one such machine; the embedding cache keeps every vector, "
        "so a re-run pays only for what changed, and a cluster divides the hours by its machines.\n"
    )


def api_reference() -> str:
    """One mkdocstrings entry per name of ``adapterkit.__all__``, under the module that defines it."""
    import adapterkit

    out: List[str] = []
    by_module: Dict[str, List[str]] = {}
    for name, module in adapterkit._EXPORTS.items():
        by_module.setdefault(module, []).append(name)
    for module, names in by_module.items():
        out += ["", f"## `{module}`", ""]
        for name in sorted(names):
            out += [f"::: {module}.{name}", ""]
    return "\n".join(out).lstrip("\n")


def option_notes() -> Dict[str, str]:
    """Each ``FinetuneConfig`` field's one-line comment, read from the source (a comment is not kept at runtime)."""
    import ast
    import io
    import tokenize

    import adapterkit.training.config as config

    source = Path(config.__file__).read_text()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "FinetuneConfig")
    spans = {n.target.id: (n.lineno, n.end_lineno) for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    comments = [
        (t.start[0], t.string.lstrip("# ")) for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT
    ]
    return {name: next((c for line, c in comments if first <= line <= last), "") for name, (first, last) in spans.items()}


def options_table() -> str:
    """Every ``FinetuneConfig`` option: the few users set, then the advanced ones, with default and meaning."""
    import dataclasses

    from adapterkit.training.config import FinetuneConfig

    notes, config = option_notes(), FinetuneConfig()
    shown = lambda v: v.__name__ if isinstance(v, type) else repr(v)  # noqa: E731 (as a Python caller writes it)
    out: List[str] = []
    for title, user in (("The options you set", True), ("Advanced", False)):
        out += [f"### {title}", "", "| option | default | set at construction only | what it does |", "|---|---|---|---|"]
        for f in dataclasses.fields(FinetuneConfig):
            if f.metadata["user"] == user:
                fixed = "yes" if f.metadata["fixed"] else ""
                out.append(f"| `{f.name}` | `{shown(getattr(config, f.name))}` | {fixed} | {notes[f.name].replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)


TABLES: Dict[str, Callable[[], str]] = {
    "options": options_table,
    "million": million_chunks,
    "api": api_reference,
    "front": front_table,
    "scale": scale_table,
    "cross_model": cross_model_table,
    "cli": cli_help,
}


def render(text: str) -> str:
    """``text`` with every marked span filled; markers are found once, in the page as written (a value never adds one)."""
    spans = sorted(
        [(m.start(), m.end(), "fig", m) for m in FIG.finditer(text)]
        + [(m.start(), m.end(), "include", m) for m in INCLUDE.finditer(text)]
        + [(m.start(), m.end(), "table", m) for m in TABLE.finditer(text)],
        key=lambda span: span[0],
    )
    out, at = [], 0
    for start, end, kind, m in spans:
        if start < at or "<!--" in (m[4] if kind == "fig" else m[3]):
            raise FigureError(f"markers nest or overlap near {text[start : start + 60]!r}: close each before the next opens.")
        out.append(text[at:start])
        if kind == "fig":
            out.append(f"<!--fig {m[1]} {m[2]}{'|' + m[3] if m[3] else ''}-->{figure(m[1], m[2], m[3] or '')}<!--/fig-->")
        elif kind == "include":
            out.append(m[1] + included(m[2]) + m[4])
        else:
            if m[2] not in TABLES:
                raise FigureError(f"no table {m[2]!r}: tools/fill_docs.py builds {sorted(TABLES)}.")
            try:
                built = TABLES[m[2]]()
            except FigureError:
                raise
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
                raise FigureError(f"table {m[2]!r}: its results files do not hold what it reads ({type(exc).__name__}: {exc}).") from None
            if "<!--" in built:
                raise FigureError(f"table {m[2]!r}: a results file holds a marker or comment.")
            out.append(m[1] + built + m[4])
        at = end
    return "".join(out) + text[at:]


def documents() -> List[Path]:
    """The pages: the README and docs/, never a link (a page is written in place)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if not p.is_symlink() and p.resolve().is_relative_to(ROOT.resolve())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a figure differs from its results file")
    args = parser.parse_args()
    try:  # every page is rendered before any is written: an error leaves them all as they were
        pages = {path: (path.read_text(), render(path.read_text())) for path in documents()}
    except FigureError as exc:
        print(f"fill_docs: {exc}", file=sys.stderr)
        return 2
    stale = [path.relative_to(ROOT).as_posix() for path, (text, new) in pages.items() if new != text]
    if not args.check:
        for path, (text, new) in pages.items():
            if new != text:
                path.write_text(new)
    if stale:
        print(("differ from benchmarks/results/ (run python tools/fill_docs.py): " if args.check else "filled: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
