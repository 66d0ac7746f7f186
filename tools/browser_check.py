"""The notebooks as a person sees them: JupyterLab in a real Chromium, every cell run, the explorer used.

Starts JupyterLab headless on a free local port over a copy of ``notebooks/`` (so nothing committed is
touched), opens each notebook in Debian's Chromium through Playwright, runs all cells from the Run
menu, saves the notebook and checks that no cell raised. In notebook 05 it types a question into
the explorer, presses Enter, and checks that base and adapter results appear. Screenshots go to
``reports/browser/``. Run::

    make browser-check                       # or: python tools/browser_check.py --only 05

Needs Chromium from the OS (``apt-get install chromium``; no browser is downloaded) and the dev extra
(JupyterLab, Playwright).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How many monthly active platform consumers did Uber have?"


def chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise SystemExit("No Chromium found: install the OS package (Debian/Ubuntu: apt-get install chromium) or set CHROMIUM=/path/to/it.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# JupyterLab settings for the server this check starts (its own settings folder, so neither the user's
# settings nor a first-run prompt change what the page shows): no news or update prompts and no toasts,
# and a notebook starts its own kernel without asking which one.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
}


def write_lab_settings(folder: Path) -> Path:
    """A fresh JupyterLab user-settings folder holding ``LAB_SETTINGS``."""
    for name, values in LAB_SETTINGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))
    return folder


def start_lab(folder: Path, port: int, token: str) -> subprocess.Popen:
    log = open(folder / "jupyterlab.log", "w")
    for fresh in ("lab-settings", "lab-workspaces"):  # nothing carried over from an earlier run
        shutil.rmtree(folder.parent / fresh, ignore_errors=True)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(write_lab_settings(folder.parent / "lab-settings")),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder.parent / "lab-workspaces"),
    }  # no layout restored from earlier runs
    lab = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={folder}",
            "--allow-root",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            time.sleep(1)
    lab.terminate()
    raise SystemExit(f"JupyterLab did not start; see {folder / 'jupyterlab.log'}")


def shut_down_kernels(port: int, token: str) -> None:
    """Stop every kernel (through the server's REST API), so notebooks do not hold memory after their turn."""
    api = f"http://127.0.0.1:{port}/api/kernels"
    for kernel in json.loads(urllib.request.urlopen(f"{api}?token={token}").read()):
        urllib.request.urlopen(urllib.request.Request(f"{api}/{kernel['id']}?token={token}", method="DELETE"))


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def open_dialog(page) -> str:
    """The text of a dialog or notification asking for an answer ('' when none): ``LAB_SETTINGS`` turns them off."""
    dialog = page.locator(".jp-Dialog, .jp-toast-button")
    return dialog.first.inner_text()[:200] if dialog.count() else ""


def idle(page) -> bool:
    return page.locator(".jp-StatusBar-TextItem", has_text="| Idle").count() > 0


def run_notebook(page, url: str, path: Path, shots: Path, timeout_s: int) -> str:
    """Open, clear, run all, save; return the first error raised by a cell ('' when none)."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    deadline = time.time() + 120
    while not idle(page) and time.time() < deadline:
        if open_dialog(page):
            return f"a dialog blocks the page: {open_dialog(page)!r}"
        time.sleep(1)
    menu(page, "Edit", "Clear Outputs of All Cells")
    menu(page, "Run", "Run All Cells")
    deadline, calm = time.time() + timeout_s, 0
    time.sleep(3)
    while time.time() < deadline and calm < 3:
        if open_dialog(page):
            return f"a dialog blocks the page: {open_dialog(page)!r}"
        calm = calm + 1 if idle(page) and page.locator(".jp-InputArea-prompt", has_text="[*]").count() == 0 else 0
        time.sleep(2)
    if calm < 3:
        return f"still running after {timeout_s} s"
    page.keyboard.press("Control+s")
    time.sleep(2)
    page.screenshot(path=str(shots / f"{path.stem}.png"))
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}"
    if any(c["cell_type"] == "code" and c.get("source") and c.get("execution_count") is None for c in nb["cells"]):
        return "a code cell did not run"
    return ""


def use_explorer(page, shots: Path) -> str:
    """Type a question into notebook 05's explorer; '' when base and adapter results appear for it."""
    box = page.locator(".widget-text input").last
    box.scroll_into_view_if_needed()
    table = page.locator(".widget-output table").last
    before = table.inner_text() if table.count() else ""
    box.fill(QUESTION)
    box.press("Enter")
    for _ in range(60):
        time.sleep(1)
        table = page.locator(".widget-output table").last
        if table.count() and table.inner_text() != before:
            break
    else:
        return "the explorer showed no new results"
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "05_explorer.png"))
    text = table.inner_text()
    if "base" not in text or "adapter" not in text or text.count("[0.") < 2:
        return f"the explorer's table lacks base and adapter results: {text[:200]!r}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 02 05")
    parser.add_argument("--output-dir", default=str(ROOT / "reports" / "browser"))
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.output_dir)
    work = out / "notebooks"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("outputs", ".ipynb_checkpoints"))
    names = sorted(p.name for p in work.glob("*.ipynb") if args.only is None or p.name[:2] in args.only)
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(work, port, token)
    failures = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            for name in names:
                started = time.time()
                page = browser.new_page(viewport={"width": 1400, "height": 1000})  # one tab per notebook; ?reset: no restored layout
                error = run_notebook(page, f"http://127.0.0.1:{port}/lab/tree/{name}?reset&token={token}", work / name, out, args.timeout)
                if not error and name.startswith("05"):
                    error = use_explorer(page, out)
                print(f"{name}: {'ok' if not error else error} ({time.time() - started:.0f} s)", flush=True)
                if error:
                    failures[name] = error
                page.close()
                shut_down_kernels(port, token)
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    print(f"screenshots in {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
