"""The walkthrough's files by name: download from the origin, verify sha256, cache; offline, use a mirror.

Order for ``get_file(name)``: the local cache (``$ADAPTERKIT_DATA_DIR``, else ``data/`` in a checkout of
the repository, else ``~/.cache/adapterkit/data`` for a pip-installed kit, e.g. on Colab),
then the origin URL, then the mirror folder (``$ADAPTERKIT_DATA_MIRROR``, default ``../shared/data``
beside the checkout). Every file is checked against its published sha256 before it is used.

Why not pooch, which fetches and verifies files too: the fetch itself is one ``urlopen`` and a hash here,
while the parts that matter (an ordered fallback to mirror folders, ``ADAPTERKIT_OFFLINE``, a cache inside
a checkout) would still be this module; pooch would add a core dependency for those few lines.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from adapterkit.atomic import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[2]
_LLAMA = "https://raw.githubusercontent.com/run-llama"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives in the mirror, where it comes from, and its checksum."""

    mirror_path: str  # relative to the mirror folder
    url: str
    sha256: str


FILES: Dict[str, RemoteFile] = {
    "lyft_2021.pdf": RemoteFile(
        "10k/lyft_2021.pdf",
        f"{_LLAMA}/llama_index/main/docs/docs/examples/data/10k/lyft_2021.pdf",
        "f9962f78002a2758a66ce228137612f9e1d50209f5ffd05b401222c2369c0bbc",
    ),
    "uber_2021.pdf": RemoteFile(
        "10k/uber_2021.pdf",
        f"{_LLAMA}/llama_index/main/docs/docs/examples/data/10k/uber_2021.pdf",
        "6727329fe30d2418ae3fa7ed644a5fcc14f691ad61b1ecc4cda6412cc4a175c2",
    ),
    "train_dataset.json": RemoteFile(
        "llamaindex_qa/run-llama_finetune-embedding/train_dataset.json",
        f"{_LLAMA}/finetune-embedding/main/data/train_dataset.json",
        "a2627276ff9c70c9910be40ce0f6c0321e275d3a0b80097c486e0b848f5fcb66",
    ),
    "val_dataset.json": RemoteFile(
        "llamaindex_qa/run-llama_finetune-embedding/val_dataset.json",
        f"{_LLAMA}/finetune-embedding/main/data/val_dataset.json",
        "670cd8a9fbca54b7f236b8bb1cae2a4362535b16cdd63ff8e878b76527f5b1f9",
    ),
    # BEIR SciFact (CC BY-NC 2.0), from public GitHub copies of BEIR's scifact.zip (see the mirror's SOURCES.md).
    "scifact/corpus.jsonl": RemoteFile(
        "scifact/corpus.jsonl",
        "https://media.githubusercontent.com/media/moorateeahtashil/Information-Retrieval/"
        "6e67f048ea403472620fbff4658e1641b8cfc82d/scifact/corpus.jsonl",
        "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    ),
    "scifact/queries.jsonl": RemoteFile(
        "scifact/queries.jsonl",
        "https://raw.githubusercontent.com/Kirloxious/CSI4107_Assignment2/312b16a52e9eece241ece628c300df5d6fbeda56/scifact/queries.jsonl",
        "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
    ),
    "scifact/qrels/train.tsv": RemoteFile(
        "scifact/qrels/train.tsv",
        "https://raw.githubusercontent.com/moorateeahtashil/Information-Retrieval/6e67f048ea403472620fbff4658e1641b8cfc82d/scifact/qrels/train.tsv",
        "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
    ),
    "scifact/qrels/test.tsv": RemoteFile(
        "scifact/qrels/test.tsv",
        "https://raw.githubusercontent.com/moorateeahtashil/Information-Retrieval/6e67f048ea403472620fbff4658e1641b8cfc82d/scifact/qrels/test.tsv",
        "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
    ),
}


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/adapterkit``, else ``~/.cache/adapterkit``: where a pip-installed kit keeps files."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adapterkit"


def data_dir() -> Path:
    """Where verified files are kept: ``$ADAPTERKIT_DATA_DIR``, ``data/`` in a checkout, else the user cache."""
    if os.environ.get("ADAPTERKIT_DATA_DIR"):
        return Path(os.environ["ADAPTERKIT_DATA_DIR"])
    if (REPO_ROOT / "pyproject.toml").is_file():  # a checkout (editable install)
        return REPO_ROOT / "data"
    # Installed into site-packages (pip install from git, Colab): keep data out of the environment.
    return user_cache_dir() / "data"


def mirror_dirs() -> List[Path]:
    """Folders searched when the origin cannot be reached, in order."""
    if "ADAPTERKIT_DATA_MIRROR" in os.environ:
        return [Path(os.environ["ADAPTERKIT_DATA_MIRROR"])]
    return [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, timeout: float) -> bool:
    try:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh)
    except OSError:
        return False
    return True


def get_file(name: str, download: Optional[bool] = None, timeout: float = 20.0) -> Path:
    """Return a verified local path for one of ``FILES`` (e.g. ``"val_dataset.json"``).

    Args:
        name: a key of ``FILES``.
        download: try the origin URL; default on unless ``ADAPTERKIT_OFFLINE=1``.
        timeout: seconds for the download attempt.
    """
    if name not in FILES:
        raise KeyError(f"Unknown data file {name!r}; known files: {sorted(FILES)}.")
    spec = FILES[name]
    dest = data_dir() / name
    if dest.is_file() and sha256_of(dest) == spec.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if download is None:
        download = os.environ.get("ADAPTERKIT_OFFLINE", "0") != "1"
    if download and _download(spec.url, dest, timeout):
        if sha256_of(dest) == spec.sha256:
            return dest
        dest.unlink()  # a changed or truncated upstream file: fall back to the mirror
    tried = []
    for mirror in mirror_dirs():
        candidate = mirror / spec.mirror_path
        tried.append(str(candidate))
        if candidate.is_file():
            if sha256_of(candidate) != spec.sha256:
                raise ValueError(f"{candidate} does not match the published sha256 {spec.sha256}; replace it.")
            shutil.copyfile(candidate, dest)
            return dest
    raise FileNotFoundError(
        f"Could not get {name}: the download from {spec.url} failed and no mirror copy exists "
        f"(looked in {', '.join(tried)}). Download it by hand and put it at {dest}, or set "
        f"ADAPTERKIT_DATA_MIRROR to a folder holding {spec.mirror_path}."
    )
