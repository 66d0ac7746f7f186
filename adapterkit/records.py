"""Small JSON records a model folder keeps (``fit.json``, ``base_model.json``, ``cross_model.json``), read
as data: a file is parsed as JSON and checked field by field, and nothing it names is imported or called."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Type, Union


def read_record(
    path: Path, fields: Mapping[str, Union[type, tuple]], error: Type[Exception], fix: str, required: Optional[Iterable[str]] = None
) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``, or None when there is no such file.

    Args:
        path: the record's file.
        fields: ``{name: type or tuple of types}``; ``True``/``False`` count as ``bool`` only, never as ``int``.
        error: the exception raised for a damaged record (its message names the file, the fields and ``fix``).
        fix: what the user should do about a damaged record.
        required: the fields that must be present (default: all of ``fields``); the others are checked when present.
    """
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"{path} is damaged: not valid JSON ({exc}). {fix}") from exc
    needed = set(fields if required is None else required)

    def fits(value: Any, kind: Union[type, tuple]) -> bool:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))

    wrong = sorted(
        k for k, kind in fields.items() if not isinstance(record, dict) or ((k in record or k in needed) and not fits(record.get(k), kind))
    )
    if wrong:
        raise error(f"{path} is damaged: it lacks or mistypes {wrong}. {fix}")
    return record
