"""A questions file anyone can write: rows of ``question``, ``file`` and an optional ``quote``.

JSONL (one object per line), CSV (a header row) or JSON (a list of objects)::

    {"question": "How long is the warranty?", "file": "guides/warranty.md", "quote": "two years from delivery"}

- ``question``: the question as a user would ask it.
- ``file``: the document that answers it, as a path relative to the documents folder
  (``adapterkit chunks DOCS`` lists them with their chunks).
- ``quote`` (optional): an exact passage of that file that answers it; the chunk or chunks holding it
  are the relevant ones (white space and letter case are not compared). Without a quote every chunk of
  the file counts as relevant. A question answered in several places takes one row per place.

``resolve_rows`` turns the rows into LlamaIndex's ``EmbeddingQAFinetuneDataset`` over a folder's
chunks and names every row it could not place (file not in the folder, quote found in no chunk).
A file in LlamaIndex's dataset JSON (``queries`` / ``corpus`` / ``relevant_docs``) is read as before.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

from adapterkit.data.datasets import DatasetError, EmbeddingQAFinetuneDataset

PathLike = Union[str, "os.PathLike[str]"]
FIELDS = ("question", "file", "quote")  # the columns a row may have; question and file are required
MAX_BYTES = 64 * 2**20  # a questions file larger than this is refused before it is read


@dataclass(frozen=True)
class QuestionRow:
    """One question, the file that answers it, and optionally the passage (``line``: its place in the file)."""

    question: str
    file: str
    quote: Optional[str]
    line: int


def _normal(text: str) -> str:
    """Text as quotes are compared: Unicode compatibility forms (NFKC: ligatures, composed accents), white
    space runs as one space, letter case ignored, soft hyphens dropped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).replace("\u00ad", "")).strip().casefold()


def _regular_file(path: Path) -> Path:
    """``path`` when it is a regular file of at most ``MAX_BYTES`` (never a pipe, device or folder)."""
    if not path.exists():
        raise DatasetError(f"Questions file {path} not found: pass the path of a .jsonl, .csv or .json file of your questions.")
    if not path.is_file():
        raise DatasetError(f"{path} is not a regular file (a folder, pipe or device): pass a .jsonl, .csv or .json file.")
    if path.stat().st_size > MAX_BYTES:
        raise DatasetError(f"{path} is larger than {MAX_BYTES // 2**20} MiB: split it, or check that it is a questions file.")
    return path


def is_dataset_json(path: PathLike) -> bool:
    """Whether ``path`` is LlamaIndex's dataset JSON (an object with ``queries``), not question rows."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return False
    with _regular_file(path).open("rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head.startswith("{") and '"question"' not in head[:200]


def _one_each(pairs: List[Tuple[str, object]]) -> dict:
    """A JSON object whose keys are each given once (a second value would silently win)."""
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the key(s) {twice} are given twice in one object")
    return dict(pairs)


def _objects(path: Path, text: str) -> List[Tuple[int, object]]:
    """``(line, object)`` per row of a JSONL, CSV or JSON file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.split("\n"), 1):  # only \n ends a line: other breaks may sit inside a string
            if line.strip():
                try:
                    rows.append((number, json.loads(line, object_pairs_hook=_one_each)))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path} line {number} is not a JSON object ({exc.msg}): write one object per line.") from exc
                except ValueError as exc:
                    raise DatasetError(f"{path} line {number}: {exc}.") from exc
        return rows
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            return []
        unnamed = [n for n in reader.fieldnames if not (n or "").strip()]
        if unnamed:
            raise DatasetError(f"{path}'s header has an empty column name: its first row must name the columns {', '.join(FIELDS)}.")
        twice = sorted({n for n in reader.fieldnames if reader.fieldnames.count(n) > 1})
        if twice:
            raise DatasetError(f"{path}'s header names {twice} twice: name each column once.")
        rows, start = [], reader.line_num + 1
        for row in reader:
            if None in row:  # DictReader's key for values beyond the header
                raise DatasetError(
                    f"{path} row starting on line {start} has more values than the header has columns: put a "
                    "value that holds a comma in double quotes."
                )
            rows.append((start, row))
            start = reader.line_num + 1
        return rows
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_one_each)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc}).") from exc
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}.") from exc
        if not isinstance(data, list):
            raise DatasetError(
                f'{path} must be a list of question objects ([{{"question": ..., "file": ...}}, ...]), or '
                "LlamaIndex's dataset JSON (queries, corpus, relevant_docs)."
            )
        return list(enumerate(data, 1))
    raise DatasetError(f"{path}: a questions file is .jsonl, .csv or .json (rows of {', '.join(FIELDS)}), got {suffix or 'no suffix'}.")


def _file_name(name: str) -> str:
    """A row's file as ``read_folder`` names files: forward slashes, no ``.`` or empty parts, Unicode NFC."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return unicodedata.normalize("NFC", "/".join(parts))


def read_rows(path: PathLike) -> List[QuestionRow]:
    """The rows of a questions file, each checked: text fields only, ``question`` and ``file`` present, no other field."""
    path = _regular_file(Path(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8.") from exc
    try:
        objects = _objects(path, text)
    except csv.Error as exc:
        raise DatasetError(f"{path} is not a readable CSV file ({exc}).") from exc
    rows = []
    for line, item in objects:
        where = f"{path} row {line}"
        if not isinstance(item, dict):
            raise DatasetError(f"{where} is not an object with {', '.join(FIELDS)}.")
        unknown = sorted(str(k) for k in item if k not in FIELDS)
        if unknown:
            raise DatasetError(f"{where} has field(s) {unknown} this file format does not have: use only {', '.join(FIELDS)}.")
        values = {k: item.get(k) for k in FIELDS}
        if any(v is not None and not isinstance(v, str) for v in values.values()):
            raise DatasetError(f"{where}: question, file and quote must be text.")
        question, file, quote = ((values[k] or "").strip() for k in FIELDS)
        if not question or not file:
            raise DatasetError(f"{where} needs a question and the file that answers it (a path relative to the documents folder).")
        try:
            (question + file + quote).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DatasetError(f"{where} holds broken Unicode (a lone surrogate, {exc.reason}): fix the text.") from exc
        rows.append(QuestionRow(question, _file_name(file), quote or None, line))
    if not rows:
        raise DatasetError(f"{path} holds no questions: write one row per question with {', '.join(FIELDS)}.")
    return rows


def question_id(question: str) -> str:
    """A question's id in the dataset: a hash of its text, so rows of one question share it."""
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]


def resolve_rows(
    rows: List[QuestionRow], corpus: Mapping[str, str], chunks_of: Mapping[str, List[str]], skipped: Optional[Mapping[str, str]] = None
) -> Tuple[EmbeddingQAFinetuneDataset, Dict[str, str]]:
    """``(dataset, not placed)``: each row's relevant chunks among a folder's, and ``{question: why}`` for questions left out.

    A row's relevant chunks are the chunks of its file that hold its quote (every chunk of the file
    without a quote). A question in several rows (several passages answer it) has the chunks of all of
    them; when one of its rows cannot be placed (its file is not in the folder or was ``skipped``, or no
    chunk holds its quote) the whole question is left out and named, as its answers would be incomplete.
    """
    normal = {c: _normal(corpus[c]) for ids in chunks_of.values() for c in ids if c in corpus}
    files = {unicodedata.normalize("NFC", f): ids for f, ids in chunks_of.items()}
    skipped_nfc = {unicodedata.normalize("NFC", f): why for f, why in (skipped or {}).items()}
    queries: Dict[str, str] = {}
    relevant: Dict[str, List[str]] = {}
    missing: Dict[str, List[str]] = {}
    for row in rows:
        ids = [c for c in files.get(row.file, []) if c in normal]
        why = None
        if not ids:
            why = (
                f"row {row.line}: {row.file} was skipped ({skipped_nfc[row.file]})"
                if row.file in skipped_nfc
                else f"row {row.line}: no file {row.file!r} in the documents (`adapterkit chunks DOCS` lists them)"
            )
        elif row.quote is not None:
            quote = _normal(row.quote)
            ids = [c for c in ids if quote in normal[c]]
            if not ids:
                why = f"row {row.line}: the quote is in no chunk of {row.file} (it must be an exact passage, within one chunk)"
        qid = question_id(row.question)
        if why is not None:
            missing.setdefault(row.question, []).append(why)
            continue
        queries[qid] = row.question
        relevant[qid] = list(dict.fromkeys(relevant.get(qid, []) + ids))
    for question in missing:  # a question with an unplaced row is left out whole
        queries.pop(question_id(question), None)
        relevant.pop(question_id(question), None)
    reasons = {q: "; ".join(whys) for q, whys in missing.items()}
    if not queries:
        raise DatasetError("No question could be placed in these documents: " + "; ".join(list(reasons.values())[:5]) + ".")
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=dict(corpus), relevant_docs=relevant), reasons


def row_for_chunk(question: str, file: str, chunk: str, others: List[str]) -> Dict[str, str]:
    """A row for a question written about ``chunk`` of ``file``: its quote is the chunk's first sentence
    that no other chunk of the file (``others``) holds, so the quote places it back on that chunk."""
    from adapterkit.data.documents import chunk_sentences

    taken = [_normal(o) for o in others]
    quote = next((s for s in chunk_sentences(chunk) if not any(_normal(s) in o for o in taken)), chunk)
    return {"question": question, "file": file, "quote": quote}
