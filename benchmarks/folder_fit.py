"""``adapterkit fit`` on a folder it never saw, through the command: cold time and memory, and honest scores.

Two folders (``--folder``):

- ``scifact``: about a hundred BEIR SciFact abstracts as files of three formats (``.md``, ``.txt``,
  ``.html``): the abstracts that the first ``--claims`` test claims cite, plus others to ``--files``; the
  claims are the questions (rows of question and file). SciFact is unlike the labelled side (the Lyft
  10-K questions), so it shows whether the defaults hold on a folder of another domain.
- ``flask``: the documentation of Flask 3.1.0 as its PyPI source distribution ships it (``docs/`` in
  reStructuredText, the examples' HTML templates, README.md, LICENSE.txt; ``pip download`` fetches it),
  with the 32 questions of ``data/flask_docs_questions.jsonl``, written by hand (question, file, quote).

Half of the questions become the questions file given to a fit; the other half is never shown to any
fit and scores the models. Three steps, each fit a separate process with an empty embedding cache:

1. ``adapterkit fit DOCS`` (no questions): time, peak RSS, what the base model embedded;
2. ``adapterkit fit DOCS --questions half.jsonl``: the same with your questions;
3. the scores of base, 1 and 2 on the other half (paired bootstrap, 95%): each fit against base, and 2 against 1.

    python benchmarks/folder_fit.py --folder scifact --output benchmarks/results/folder_fit_scifact
    python benchmarks/folder_fit.py --folder flask --output benchmarks/results/folder_fit_flask
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from fit_documents import run  # this folder is on the path of a script run from it

from adapterkit import AdapterEmbeddingModel, resolve_embed_model
from adapterkit.data.folders import read_folder
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.question_rows import read_rows, resolve_rows
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.evaluate import evaluate
from adapterkit.evaluation.runner import provenance

FORMATS = (".md", ".txt", ".html")


FLASK = "flask==3.1.0"
FLASK_QUESTIONS = Path(__file__).parent / "data" / "flask_docs_questions.jsonl"


def halves(rows: list, seed: int = 0) -> tuple:
    """``(rows given to fit, rows held out)``: a seeded half each."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[: len(rows) // 2]], [rows[i] for i in order[len(rows) // 2 :]]


def flask_folder(docs: Path, work: Path) -> tuple:
    """Flask's documentation from its source distribution, and the hand-written questions in halves."""
    import subprocess
    import sys
    import tarfile

    subprocess.run([sys.executable, "-m", "pip", "download", FLASK, "--no-deps", "--no-binary", ":all:", "-q", "-d", work], check=True)
    with tarfile.open(next(work.glob("flask-*.tar.gz"))) as tar:
        tar.extractall(work / "sdist", filter="data")
    root = next((work / "sdist").iterdir())
    shutil.copytree(root / "docs", docs / "docs", ignore=shutil.ignore_patterns("_static"))
    for page in (root / "examples").rglob("*.html"):
        (docs / page.relative_to(root).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(page, docs / page.relative_to(root))
    for name in ("README.md", "LICENSE.txt"):
        shutil.copy(root / name, docs / name)
    return halves([json.loads(line) for line in FLASK_QUESTIONS.read_text().splitlines() if line.strip()])


def write_folder(docs: Path, claims: int, files: int, seed: int = 0) -> tuple:
    """The abstracts as files and ``(rows given to fit, rows held out)``."""
    test = load_qa_datasets("scifact")[1]
    qids = list(test.queries)[:claims]
    cited = list(dict.fromkeys(d for q in qids for d in test.relevant_docs[q]))
    others = [d for d in np.random.default_rng(seed).permutation(list(test.corpus)) if d not in set(cited)]
    chosen = cited + others[: max(0, files - len(cited))]
    name = {}
    for i, d in enumerate(chosen):
        suffix = FORMATS[i % len(FORMATS)]
        name[d] = f"{'abstracts' if i % 2 else 'papers/more'}/{d}{suffix}"
        path = docs / name[d]
        path.parent.mkdir(parents=True, exist_ok=True)
        text = test.corpus[d]
        path.write_text(f"<html><body><p>{html.escape(text)}</p></body></html>" if suffix == ".html" else text)
    return halves([{"question": test.queries[q], "file": name[test.relevant_docs[q][0]]} for q in qids], seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", choices=("scifact", "flask"), default="scifact")
    parser.add_argument("--claims", type=int, default=100)
    parser.add_argument("--files", type=int, default=110)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adapterkit-folder-bench-"))
    try:
        docs = work / "docs"
        given, held = write_folder(docs, args.claims, args.files) if args.folder == "scifact" else flask_folder(docs, work)
        for name, rows in (("given.jsonl", given), ("held.jsonl", held)):
            (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs = {
            "without questions": run(["fit", docs, "--out", work / "plain", "--cache-dir", work / "cache-1", "--quiet"]),
            f"with {len(given)} questions": run(
                ["fit", docs, "--out", work / "asked", "--cache-dir", work / "cache-2", "--quiet", "--questions", work / "given.jsonl"]
            ),
        }
        found = read_folder(docs, show_progress=False)
        dataset, missing = resolve_rows(read_rows(work / "held.jsonl"), found.corpus, found.chunks_of)
        assert not missing, missing
        base = resolve_embed_model("default")
        frames = {"base": evaluate(dataset, base, top_k=10)}
        for label, folder in zip(runs, ("plain", "asked")):
            frames[label] = evaluate(dataset, AdapterEmbeddingModel(base, work / folder), top_k=10)
        against_base = comparison_table(frames)
        against_plain = comparison_table({k: v for k, v in frames.items() if k != "base"}, base="without questions")
        reports = {label: json.loads((work / folder / "report.json").read_text()) for label, folder in zip(runs, ("plain", "asked"))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "folder": args.folder,
        "files": len(found.files),
        "formats": sorted({Path(f).suffix for f in found.files}),
        "chunks": len(found.nodes),
        "held_out_claims": len(dataset.queries),
        "runs": runs,
        "verdicts": {k: r["verdict"] for k, r in reports.items()},
        "embedded": {k: r["embedded_by_base_model"] for k, r in reports.items()},
        "against_base": against_base.to_dict(orient="records"),
        "against_without": against_plain.to_dict(orient="records"),
    }
    print(json.dumps(summary, indent=1, default=str))
    if args.output:
        Path(args.output + ".json").write_text(json.dumps({**summary, "provenance": provenance()}, indent=1, default=str) + "\n")
        title = "SciFact abstracts" if args.folder == "scifact" else f"{FLASK}'s documentation"
        lines = [
            f"# `adapterkit fit` on a folder of {title}",
            "",
            f"`python benchmarks/folder_fit.py --folder {args.folder} --output {args.output}`",
            "",
            f"{summary['files']} files ({', '.join(summary['formats'])}), {summary['chunks']} chunks; "
            f"{len(given)} questions given to the second fit, "
            f"{summary['held_out_claims']} held out of both and scored here. Each fit a separate process with an empty cache.",
            "",
            "| run | seconds | peak RSS (MB) | base model embedded (texts / queries) | first line of the report |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {r['seconds']} | {r['peak_rss_mb']} | {summary['embedded'][n]['text']} / {summary['embedded'][n]['query']} | "
            f"{summary['verdicts'][n]} |"
            for n, r in runs.items()
        ]
        lines += [
            "",
            "Scores on the held-out questions:",
            "",
            against_base.to_markdown(index=False),
            "",
            "Against the fit without questions:",
            "",
            against_plain[["model", "Δndcg@10", "Δndcg@10 95%", "Δmrr@5", "Δmrr@5 95%"]].to_markdown(index=False),
            "",
        ]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
