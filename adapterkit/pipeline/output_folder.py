"""The model folder a fit writes: checked against the inputs, locked for the run, written aside and swapped in.

- ``check_inputs_apart``: an output folder that is, contains or lies inside an input (the documents
  folder, the questions file, a local store, the embedding cache) is refused before anything is
  written or removed: replacing the folder would delete that input.
- ``FolderLock``: one fit at a time per output folder (an OS file lock ``.<name>.fit-lock`` beside it,
  released by the OS when the process ends, however it ends); a second fit stops with a message naming the first.
- ``StagedFolder``: the run writes into ``.<name>.fit-staging`` beside the folder, and ``commit`` puts it
  in place with one rename (``renameat2(RENAME_EXCHANGE)`` where the OS has it). A run cut off at any
  moment leaves the old folder whole, or no folder where there was none. A staging folder left by a
  cut-off run of the same fit is continued (its question journal is kept); any other is cleared.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from adapterkit.errors import AdapterkitError
from adapterkit.records import read_record

PathLike = Union[str, "os.PathLike[str]"]
MANIFEST = "fit.json"  # what a fit read and how: compared by the next run on the same folder


class OutputFolderError(AdapterkitError, ValueError):
    """The output folder holds something this run must not overwrite, or is in use."""


def check_inputs_apart(out: PathLike, inputs: Dict[str, Optional[PathLike]]) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs`` (``{what: path}``)."""
    target = Path(out).resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if source == target or source.is_relative_to(target):
            raise OutputFolderError(
                f"The output folder {out} holds the {what} ({path}): writing the model there would replace it. Choose an --out outside it."
            )
        if target.is_relative_to(source) and what != "questions file":
            raise OutputFolderError(
                f"The output folder {out} is inside the {what} ({path}): the model would be written "
                "among its files (and read as part of it). Choose an --out outside it."
            )


MANIFEST_FIELDS: Dict[str, Union[type, tuple]] = {
    "origin": str,
    "embed_model": str,
    "embed_spec": (str, type(None)),
    "files": dict,
    "chunks_of": dict,
    "chunks": list,
    "complete": bool,
    "stored_chunks": (int, type(None)),
    "memory_table": (str, type(None)),
    "chunk_size": (int, type(None)),
    "chunk_overlap": (int, type(None)),
    "follow_symlinks": bool,
}


def questions_outside(questions: Optional[Union[str, os.PathLike]], docs: Optional[Union[str, os.PathLike]]) -> None:
    """A questions file inside the documents folder would be read as a document (its questions and quotes searched)."""
    if questions is None or docs is None:
        return
    q, d = Path(questions).resolve(), Path(docs).resolve()
    if q == d or d in q.parents:
        raise ValueError(
            f"The questions file {questions} is inside the documents folder {docs}, where it would be read as one of "
            "the documents (its questions and quotes searched): move it out of the folder."
        )


def read_manifest(path: Path) -> Optional[Dict[str, Any]]:
    """A fit's ``fit.json``, checked field by field: None when absent, an ``OutputFolderError`` naming the file when damaged."""
    fix = "Pass --overwrite to fit this folder afresh."
    record = read_record(path, MANIFEST_FIELDS, OutputFolderError, fix, required=("origin", "embed_model"))
    if record is not None:
        names = [*record.get("files", {}), *record.get("files", {}).values(), *record.get("chunks", [])]
        if not all(isinstance(n, str) for n in names):
            raise OutputFolderError(f"{path} is damaged: its files or chunks are not names. {fix}")
    return record


LOCK_TEXT = "pid "  # what a lock file holds while a fit runs: "pid N on HOST, started TIME"


class FolderLock:
    """An exclusive lock on ``out`` for one fit: ``.<name>.fit-lock`` beside it names the owner's pid, host and start.

    The OS drops the lock when the process ends, so a killed run never leaves the folder locked; a run that
    ends removes the file. A link, or a file that is not a lock, at that path is refused, never written.
    """

    def __init__(self, out: PathLike) -> None:
        self.out = resolved_folder(out)
        self.path = self.out.parent / f".{self.out.name}.fit-lock"
        self._file: Any = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # another run may remove the file between our open and our lock: then lock the new one
            handle = self._open()
            if not _try_lock(handle):
                handle.seek(0)
                owner = handle.read(200).strip() or "another process"
                handle.close()
                raise OutputFolderError(
                    f"{self.out} is being written by another fit ({owner}): wait for it to end, or choose another --out."
                )
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        else:
            raise OutputFolderError(f"{self.path} keeps changing under this fit: another program is using it; choose another --out.")
        handle.seek(0)
        held = handle.read(200)
        if held and not held.startswith(LOCK_TEXT):
            handle.close()
            raise OutputFolderError(
                f"{self.path} is in the way (it is where a fit keeps its lock, but it holds something "
                "else): move it away, or choose another --out."
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"{LOCK_TEXT}{os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._file = handle
        return self

    def _open(self) -> Any:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:  # a link (ELOOP), a folder, or no permission
            raise OutputFolderError(
                f"{self.path} is in the way ({exc.strerror}): it is where a fit keeps its lock; move it away, or choose another --out."
            ) from None
        if not os.path.isfile(self.path) or os.path.islink(self.path):
            os.close(fd)
            raise OutputFolderError(f"{self.path} is in the way (not a plain file): move it away, or choose another --out.")
        return os.fdopen(fd, "r+", encoding="utf-8")

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still locked: a run waiting on this file sees it go and retries
            _unlock(self._file)
            self._file.close()
            self._file = None


def _try_lock(handle: Any) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(handle: Any) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class StagedFolder:
    """Where a fit writes its model folder before it is swapped in (call under ``FolderLock``).

    Args:
        out: the model folder.
        origin, model_id: what this fit reads and with which model (a staging folder of the same
            fit, cut off before, is continued).
        keep_previous: start from a copy of ``out`` (an update of the same fit keeps its journals).
    """

    def __init__(self, out: PathLike, origin: str, model_id: str, keep_previous: bool) -> None:
        self.out = resolved_folder(out)
        self.path = self.out.parent / f".{self.out.name}.fit-staging"
        _recover(self.out, self.path)
        left = self._leftover(origin, model_id)
        if not left:
            if self.path.exists():
                shutil.rmtree(self.path)
            if keep_previous and self.out.is_dir():
                shutil.copytree(self.out, self.path, symlinks=True)
            else:
                self.path.mkdir(parents=True)
        marker = {"origin": origin, "embed_model": model_id, "complete": False}
        (self.path / MANIFEST).write_text(json.dumps(marker), encoding="utf-8")

    def _leftover(self, origin: str, model_id: str) -> bool:
        """True when a cut-off run of this same fit left its staging folder (continued); refuse one that is not a fit's."""
        if not self.path.exists() and not self.path.is_symlink():
            return False
        if self.path.is_symlink() or not self.path.is_dir():
            raise OutputFolderError(
                f"{self.path} is in the way (it is where a fit stages {self.out}, and it is not a folder a "
                "fit made): move it away, or choose another --out."
            )
        try:
            record = read_manifest(self.path / MANIFEST)
        except OutputFolderError:
            record = None
        if record is None:
            raise OutputFolderError(
                f"{self.path} is in the way (it is where a fit stages {self.out}, but it holds no fit): "
                "move it away, or choose another --out."
            )
        return record.get("complete") is False and record.get("origin") == origin and record.get("embed_model") == model_id

    def discard(self) -> None:
        """After a run that failed: remove the staging folder, unless it holds a journal of answers a run can
        continue from (LLM questions: ``*.progress.jsonl``), which the next run of this fit picks up."""
        if self.path.is_dir() and not any(p.name.endswith(".progress.jsonl") for p in self.path.rglob("*")):
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> None:
        """Put the staged folder in place of ``out`` in one rename; the old folder is then removed."""
        if self.out.exists() and _exchange(self.path, self.out):
            shutil.rmtree(self.path)  # now the old folder
            return
        if self.out.exists():  # no atomic exchange here: old aside, new in place (``_recover`` undoes a cut in between)
            aside = _aside(self.out)
            if aside.exists():
                raise OutputFolderError(
                    f"{aside} is in the way (a fit puts the old {self.out} there while it swaps in the new "
                    "one): move it away and run again."
                )
            os.replace(self.out, aside)
            os.replace(self.path, self.out)
            shutil.rmtree(aside)
        else:
            os.replace(self.path, self.out)


def resolved_folder(out: PathLike) -> Path:
    """``out`` as an absolute path without links (``.`` and ``..`` named), so that what sits beside it is beside it."""
    folder = Path(out).resolve()
    if not folder.name:
        raise OutputFolderError(f"{out} is the root of the file system: choose a folder for the model.")
    return folder


def _aside(out: Path) -> Path:
    return out.parent / f".{out.name}.fit-old"


def _recover(out: Path, staging: Path) -> None:
    """A cut between the two renames of a commit without exchange: the old folder (a fit's: it has ``fit.json``)
    goes back in place, or is removed once the new one is in place. Anything else there is left alone."""
    aside = _aside(out)
    if aside.is_dir() and (aside / MANIFEST).is_file():
        if out.exists():
            shutil.rmtree(aside)
        else:
            os.replace(aside, out)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the OS or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def input_paths(docs: Optional[PathLike], questions: Optional[PathLike], store: Any, cache: Any) -> Dict[str, Optional[PathLike]]:
    """The local paths a fit reads: what the output folder must stay apart from."""
    from urllib.parse import urlparse

    local_store = None
    if isinstance(store, str) and store.startswith("qdrant:"):
        local_store = urlparse(store).path or None
    cache_folder = getattr(cache, "folder", cache) if cache is not None else None
    if cache is None:
        from adapterkit.cache import default_cache_dir

        cache_folder = default_cache_dir()
    return {
        "documents folder": docs,
        "questions file": questions,
        "local Qdrant store": local_store,
        "embedding cache": cache_folder if isinstance(cache_folder, (str, os.PathLike)) else None,
    }
