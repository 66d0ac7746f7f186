"""The Colab path: one repository URL stamped everywhere it is needed, and a local Colab simulation.

A notebook opened in Colab arrives without the repository, so its first cell pip-installs adapterkit
from git. The URL lives in three places that must agree: ``[project.urls] Repository`` in
pyproject.toml, the install cell of every notebook, and the Colab badges in docs/guides/notebooks.md.

    python tools/colab.py set-url https://github.com/<you>/adapterkit   # after publishing or forking
    python tools/colab.py check                                         # the three agree (a test runs this)
    python tools/colab.py simulate [--workdir /tmp/colab-sim]           # run 01 and 02 as Colab would

``simulate`` is as close to Colab as this offline machine gets: a fresh virtualenv holding only torch
and a Jupyter kernel (Colab preinstalls both), a stand-in ``google.colab`` module imported at kernel
start, a working folder without the repository, and ``ADAPTERKIT_REPO=file://localhost/<this checkout>`` (pip wants a host in a git URL) so
the install cell's ``pip install git+...`` installs the committed HEAD. The data come from the
mirror folder, where Colab would download them from the origin.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_GUIDE = "docs/guides/notebooks.md"  # holds the Colab badges
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PLACEHOLDER = "https://github.com/OWNER/adapterkit"
_CELL_URL = re.compile(r'(os\.environ\.get\("ADAPTERKIT_REPO", ")([^"]*)("\))')
_BADGES = re.compile(r"(<!-- colab-badges -->\n)(.*?)(<!-- /colab-badges -->)", re.S)
_PYPROJECT_URL = re.compile(r'^(Repository\s*=\s*")([^"]*)(")', re.M)  # the one Repository key, under [project.urls]


def install_cell(nb: dict) -> dict:
    """The notebook's Colab install cell (the first code cell); refuses a notebook without one."""
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    if "google.colab" not in "".join(cell["source"]):
        raise ValueError("The first code cell is not the Colab install cell.")
    return cell


def badges(url: str) -> str:
    """Markdown badges opening each notebook in Colab (only GitHub repositories can be opened there)."""
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", url)
    if not match:
        return f"Colab opens notebooks from GitHub; {url} is not a GitHub URL.\n"
    lines = []
    for nb in NOTEBOOKS:
        link = f"https://colab.research.google.com/github/{match.group(1)}/blob/main/notebooks/{nb.name}"
        lines.append(f"- [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link}) `{nb.name}`")
    return "\n".join(lines) + "\n"


def _one(pattern: re.Pattern, text: str, where: str) -> re.Match:
    """The single match of ``pattern`` in ``text``; a clear error when the place is missing or ambiguous."""
    found = list(pattern.finditer(text))
    if len(found) != 1:
        raise ValueError(f"{where}: expected one match of {pattern.pattern!r}, found {len(found)}; restore that line or block.")
    return found[0]


def urls() -> dict:
    """The URL each place holds now."""
    found = {"pyproject.toml": _one(_PYPROJECT_URL, (ROOT / "pyproject.toml").read_text(), "pyproject.toml").group(2)}
    for nb in NOTEBOOKS:
        found[nb.name] = _one(_CELL_URL, "".join(install_cell(json.loads(nb.read_text()))["source"]), nb.name).group(2)
    readme = _one(_BADGES, (ROOT / NOTEBOOKS_GUIDE).read_text(), NOTEBOOKS_GUIDE).group(2)
    found[NOTEBOOKS_GUIDE] = found["pyproject.toml"] if readme == badges(found["pyproject.toml"]) else f"badges differ: {readme!r}"
    return found


def set_url(url: str) -> None:
    url = url.rstrip("/")
    urls()  # every place exists exactly once before anything is written
    path = ROOT / "pyproject.toml"
    path.write_text(_PYPROJECT_URL.sub(lambda m: m.group(1) + url + m.group(3), path.read_text()))
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        cell = install_cell(nb)
        cell["source"] = _CELL_URL.sub(lambda m: m.group(1) + url + m.group(3), "".join(cell["source"])).splitlines(keepends=True)
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    path = ROOT / NOTEBOOKS_GUIDE
    path.write_text(_BADGES.sub(lambda m: m.group(1) + badges(url) + m.group(3), path.read_text()))


def check() -> int:
    found = urls()
    if len(set(found.values())) != 1:
        print("The repository URL differs between places; run `python tools/colab.py set-url URL`:")
        for where, url in found.items():
            print(f"  {where}: {url}")
        return 1
    url = found["pyproject.toml"]
    print(f"All {len(found)} places name {url}" + (" (the placeholder: set-url after publishing)" if url == PLACEHOLDER else ""))
    return 0


_FAKE_COLAB = '''"""Stand-in for Colab's google.colab package (tools/colab.py simulate)."""
from . import output
'''
_FAKE_OUTPUT = """import os

def enable_custom_widget_manager():
    open(os.environ["COLAB_SIM_LOG"], "a").write("enable_custom_widget_manager\\n")
"""


def simulate(workdir: Path, python: str) -> int:
    """Install like Colab and run 01 (a few pages) and 02 (one epoch); report what happened."""
    marker = workdir / ".adapterkit-colab-sim"
    if workdir.exists() and any(workdir.iterdir()) and not marker.exists():
        raise SystemExit(f"{workdir} is not empty and was not made by this simulation; pick another --workdir.")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    marker.touch()
    venv, content, fake = workdir / "venv", workdir / "content", workdir / "fake_colab"
    content.mkdir(parents=True)
    # No google/__init__.py: "google" stays a namespace package, so google.protobuf (onnx needs it) still imports.
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text(_FAKE_COLAB)
    (fake / "google" / "colab" / "output.py").write_text(_FAKE_OUTPUT)
    startup = workdir / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # Colab imports it before any cell runs\n")

    run = lambda *cmd, **kw: subprocess.run([str(c) for c in cmd], check=True, **kw)  # noqa: E731
    t0 = time.perf_counter()
    run(python, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    # What Colab has before the first cell: torch, a kernel, and papermill here to drive it headless.
    run(*pip, os.environ.get("TORCH_SPEC", "torch==2.13.0"), "ipykernel", "papermill")
    run(venv / "bin" / "python", "-m", "ipykernel", "install", "--prefix", venv, "--name", "colab-sim")
    prepared = time.perf_counter() - t0

    env = dict(
        os.environ,
        IPYTHONDIR=str(workdir / "ipython"),
        PYTHONPATH=str(fake),
        COLAB_SIM_LOG=str(workdir / "colab.log"),
        ADAPTERKIT_REPO=f"file://localhost{ROOT}",
        ADAPTERKIT_DATA_MIRROR=str(ROOT.parent / "shared" / "data"),
        ADAPTERKIT_CACHE_DIR=str(workdir / "cache"),
        XDG_CACHE_HOME=str(workdir / "xdg"),
        JUPYTER_PATH=str(venv / "share" / "jupyter"),
    )
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"  # as on Colab, the kernel's python comes first
    env.pop("VIRTUAL_ENV", None)
    runs = [("01_dataset.ipynb", ["-p", "max_pages", "5"]), ("02_linear_adapter.ipynb", [])]
    times = {}
    for name, params in runs:
        shutil.copy(ROOT / "notebooks" / name, content / name)
        t1 = time.perf_counter()
        run(venv / "bin" / "papermill", name, f"out_{name}", "-k", "colab-sim", "--cwd", content, *params, cwd=content, env=env)
        times[name] = time.perf_counter() - t1
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import adapterkit; print(adapterkit.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=content,
    ).stdout.strip()
    print(f"fresh venv with torch + kernel: {prepared:.0f} s")
    for name, secs in times.items():
        print(f"{name}: {secs:.0f} s" + (" (with the install cell's pip install)" if name == runs[0][0] else ""))
    print(f"adapterkit imported from {where}")
    print(f"widget manager enabled {(workdir / 'colab.log').read_text().count('enable')} times (once per notebook)")
    print(f"data cached in {sorted(p.name for p in (workdir / 'xdg' / 'adapterkit' / 'data').iterdir())}")
    result = json.loads((content / "out_02_linear_adapter.ipynb").read_text())
    tables = [
        o["data"]["text/plain"]
        for c in result["cells"]
        for o in c.get("outputs", [])
        if "retrievers" in "".join(o.get("data", {}).get("text/plain", ""))
    ]
    print("02's results table:\n" + "".join(tables[-1]))
    ok = "site-packages" in where and str(ROOT) not in where
    print("Colab simulation passed" if ok else "adapterkit was not installed by the Colab cell")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("set-url").add_argument("url")
    sub.add_parser("check")
    sim = sub.add_parser("simulate")
    sim.add_argument("--workdir", type=Path, default=Path("/tmp/adapterkit-colab-sim"))
    sim.add_argument("--python", default="python3", help="the interpreter for the fresh virtualenv")
    args = parser.parse_args()
    if args.cmd == "set-url":
        set_url(args.url)
        return check()
    if args.cmd == "check":
        return check()
    return simulate(args.workdir, args.python)


if __name__ == "__main__":
    sys.exit(main())
