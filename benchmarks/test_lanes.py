"""How long each test lane takes in a fresh clone: `make install`, `make test-fast`, `make test`.

Clones this repository's HEAD into a temporary folder (untracked and changed files are not in it),
beside a link to the ``shared/`` data folder that sits beside this checkout,
runs each command there as a new user would, and records its seconds, its pytest summary lines and
whether it passed. The tests' embedding cache lives in the clone (``.cache/test-embeddings``), so it
starts empty; pip's download cache is whatever the machine has.
Run::

    python benchmarks/test_lanes.py --output benchmarks/results/test_lanes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapterkit.evaluation.runner import provenance  # noqa: E402

LANES = ("install", "test-fast", "test")
SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed|error).*?) in [\d.]+s", re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", nargs="+", default=list(LANES), choices=LANES)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    made = provenance()
    rows = []
    with tempfile.TemporaryDirectory(prefix="adapterkit-lanes-") as tmp:
        clone = Path(tmp) / "adapterkit"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"  # the data folder beside a checkout, as beside this one
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared)
        env = dict(os.environ, CI="true")
        env.pop("ADAPTERKIT_TEST_CACHE_DIR", None)  # the clone's own, empty
        for lane in args.lanes:
            start = time.perf_counter()
            run = subprocess.run(["make", lane], cwd=clone, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            log = run.stdout + run.stderr
            rows.append(
                {
                    "command": f"make {lane}",
                    "seconds": round(seconds, 1),
                    "minutes": f"{int(seconds // 60)} min {int(seconds % 60)} s",
                    "passed": run.returncode == 0,
                    "pytest": SUMMARY.findall(log),
                }
            )
            print(rows[-1], flush=True)
            if run.returncode:
                print(log[-4000:], file=sys.stderr)
    command = "python benchmarks/test_lanes.py --output benchmarks/results/test_lanes"
    result = {"command": command, "provenance": made, "rows": rows}
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["# Test lanes in a fresh clone", "", f"`{command}`", "", "| command | time | passed | pytest |", "|---|---|---|---|"]
        lines += [f"| `{r['command']}` | {r['minutes']} | {'yes' if r['passed'] else '**no**'} | {'; '.join(r['pytest'])} |" for r in rows]
        lines += [
            "",
            f"Commit `{made['commit']}`, {made['cpu']}, {made['cores']} cores, {made['date']}; "
            "the tests' embedding cache empty (it lives in the clone), pip's download cache as the machine had it.",
        ]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
