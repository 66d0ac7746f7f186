"""The README's install line for the command, from a built wheel into a clean virtualenv, runs fit and eval."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_extras() -> str:
    """The extras the README names for the command line (``pip install 'adapterkit[...]'`` under "Install")."""
    section = ROOT.joinpath("README.md").read_text().split("## Install", 1)[1]
    return re.search(r"pip install 'adapterkit\[([a-z,]+)\]'", section).group(1)


def sh(*argv, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def link_torch(env_dir: Path) -> None:
    """This environment's torch (the CPU build ``make install`` chose) linked into the clean one, as a user who
    installed torch first has it: unpacking its 700 MB again would only time the disk. Its own requirements
    are still resolved and installed by pip, like every package the extras name."""
    from importlib.metadata import distribution

    torch = distribution("torch")
    site = next((env_dir / "lib").glob("python*/site-packages"))
    for top in sorted({str(f).split("/")[0] for f in torch.files if not str(f).startswith("..")}):
        (site / top).symlink_to(Path(torch.locate_file(top)))


@pytest.mark.slow
def test_the_wheel_with_the_readmes_extras_runs_fit_and_eval(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "reports", "outputs", "__pycache__"))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source)
    wheel = next((tmp_path / "dist").glob("adapterkit-*.whl"))
    env_dir = tmp_path / "clean"
    sh(sys.executable, "-m", "venv", env_dir)
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "-q"]
    link_torch(env_dir)
    sh(*pip, f"adapterkit[{readme_extras()}] @ {wheel.as_uri()}")
    listed = sh(env_dir / "bin" / "python", "-m", "pip", "list", "--format=json").stdout
    assert "matplotlib" not in {p["name"].lower() for p in json.loads(listed)}  # the command needs no plotting library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.md").write_text("Honey bees tell each other where flowers are with a waggle dance. Worker bees collect nectar.")
    (docs / "tides.txt").write_text("Spring tides happen when the Sun and Moon line up. Neap tides come at right angles.")
    (docs / "lava.html").write_text("<html><body><p>Shield volcanoes have gentle slopes of runny lava.</p></body></html>")
    questions = tmp_path / "q.csv"
    questions.write_text(
        "question,file,quote\nHow do bees share where flowers are?,bees.md,waggle dance\n"
        "When do spring tides happen?,tides.txt,Sun and Moon line up\nWhat are shield volcanoes like?,lava.html,\n"
    )
    command = env_dir / "bin" / "adapterkit"
    from adapterkit.data.files import mirror_dirs

    # the published questions come from their origin, or offline (as here) from the configured mirror folder
    mirror = next((str(d) for d in mirror_dirs() if d.is_dir()), None)
    env = {**os.environ, "ADAPTERKIT_CACHE_DIR": str(tmp_path / "cache"), **({"ADAPTERKIT_DATA_MIRROR": mirror} if mirror else {})}
    fit = sh(command, "fit", docs, "--out", tmp_path / "model", "--questions", questions, "--epochs", "1", "--quiet", env=env, cwd=tmp_path)
    assert fit.stdout.startswith("Kept: ")
    report = (tmp_path / "model" / "report.md").read_text()
    assert "No plots: they need matplotlib" in report
    evaluated = sh(command, "eval", tmp_path / "model", questions, "--docs", docs, "--quiet", env=env, cwd=tmp_path)
    assert "adapter" in evaluated.stdout
