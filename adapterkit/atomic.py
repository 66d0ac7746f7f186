"""Atomic file writes: a crash or a second writer never leaves a half-written file under the final name.

Each write goes to a unique temporary name beside the target (process id + random tag, so two
writers never share one), then ``os.replace`` puts it in place in one step.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target``, on an error it is removed.

    Example::

        with atomic_path("model/config.json") as tmp:
            tmp.write_text("{}")
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
