"""``adapterkit fit`` on the two 10-K PDFs as "your documents": time, peak memory, base-model calls.

The Lyft and Uber PDFs are copied into a fresh folder and fitted with the command a user runs, with
an empty embedding cache (cold), then again unchanged (warm re-run), then after one PDF is removed.
Each run is a separate process; its peak RSS is read from ``wait4``.

    python benchmarks/fit_documents.py --output benchmarks/results/fit_documents
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adapterkit.data.files import get_file
from adapterkit.evaluation.runner import provenance


def run(argv: list) -> dict:
    """One ``adapterkit`` process: its wall time, its own peak RSS (``wait4``) and what it printed."""
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:  # files: a full pipe never blocks the child
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "adapterkit.cli", *map(str, argv)], stdout=out_file, stderr=err_file)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"adapterkit {' '.join(map(str, argv))} failed:\n{err[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "stdout": out.strip().splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adapterkit-fit-bench-"))
    try:
        docs = work / "docs"
        docs.mkdir()
        for name in ("lyft_2021.pdf", "uber_2021.pdf"):
            shutil.copy(get_file(name), docs / name)
        fit = ["fit", docs, "--out", work / "model", "--cache-dir", work / "cache", "--quiet"]
        results = {"cold": run(fit), "warm re-run": run(fit)}
        (docs / "lyft_2021.pdf").unlink()
        results["after removing one PDF"] = run(fit)
        summary = json.loads((work / "model" / "report.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, r in results.items():
        print(
            f"{name}: {r['seconds']} s, peak RSS {r['peak_rss_mb']} MB; "
            + " | ".join(line for line in r["stdout"] if "calls" in line or "Since" in line)
        )
    if args.output:
        Path(args.output + ".json").write_text(json.dumps({"runs": results, "last_report": summary, "provenance": provenance()}, indent=1))
        lines = [
            "# `adapterkit fit` on the two 10-K PDFs",
            "",
            "`python benchmarks/fit_documents.py --output benchmarks/results/fit_documents`",
            "",
            "| run | seconds | peak RSS (MB) | what the command printed |",
            "|---|---|---|---|",
        ]
        lines += [f"| {n} | {r['seconds']} | {r['peak_rss_mb']} | {'; '.join(r['stdout'][:3])} |" for n, r in results.items()]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
