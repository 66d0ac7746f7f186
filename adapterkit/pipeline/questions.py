"""``write_questions`` (the ``adapterkit questions`` command): an LLM's questions about a folder's chunks, resumable."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from adapterkit.atomic import write_text
from adapterkit.data.llms import ask_before_paid_calls
from adapterkit.data.question_rows import FIELDS, row_for_chunk
from adapterkit.data.questions import GeneratedQADataset, generate_qa_embedding_pairs
from adapterkit.pipeline.output_folder import questions_outside
from adapterkit.pipeline.sources import ChunkSource, chunks_from_folder

PathLike = Union[str, "os.PathLike[str]"]
ROW_SUFFIXES = (".jsonl", ".csv")  # written as question rows; .json as LlamaIndex's dataset JSON


def write_rows(dataset: GeneratedQADataset, source: ChunkSource, out: Path) -> None:
    """The questions as rows of question, file and quote (a passage that places each on its chunk)."""
    file_of = {c: f for f, ids in source.chunks_of.items() for c in ids}
    rows = []
    for qid, question in dataset.queries.items():
        chunk = dataset.relevant_docs[qid][0]
        file = file_of[chunk]
        others = [source.corpus[c] for c in source.chunks_of[file] if c != chunk]
        rows.append(row_for_chunk(question, file, source.corpus[chunk], others))
    if out.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_text(out, text)


def write_questions(
    docs: PathLike,
    out: PathLike,
    llm: Any = "default",
    questions_per_chunk: int = 2,
    max_workers: int = 4,
    confirm: Optional[Callable[[str], bool]] = None,
    chunk_size: int = 1024,
    chunk_overlap: int = 200,
    show_progress: bool = True,
    follow_symlinks: bool = False,
) -> GeneratedQADataset:
    """Ask ``llm`` for questions about every chunk of ``docs`` and write them to ``out``.

    A ``.jsonl`` or ``.csv`` ``out`` gets rows of question, file and quote (``question_rows``), a
    ``.json`` one LlamaIndex's dataset JSON with the chunk ids ``adapterkit fit`` gives the same folder;
    either can be passed to ``fit`` as ``--questions``. Each answered chunk is journaled at once
    (``<out>.progress.jsonl``): a killed run loses only the calls in flight, and a re-run asks only the
    chunks not done (or changed). ``confirm`` is asked before a paid API is called, with the number of calls.
    """
    out = Path(out)
    if out.suffix.lower() not in (*ROW_SUFFIXES, ".json"):
        raise ValueError(
            f"{out}: write questions to a .jsonl or .csv file (rows of question, file, quote) or a .json file (LlamaIndex's dataset JSON)."
        )
    if isinstance(questions_per_chunk, bool) or not isinstance(questions_per_chunk, int) or questions_per_chunk < 1:
        raise ValueError(f"questions_per_chunk (--per-chunk) must be a whole number >= 1, got {questions_per_chunk!r}.")
    questions_outside(out, docs)
    journal = Path(str(out) + ".progress.jsonl")
    if out.exists() and not journal.exists():  # a file this command did not write (or whose journal is gone)
        raise ValueError(
            f"{out} exists and holds no journal of this command ({journal.name}): it may be questions written by hand. "
            "Choose another --out, or remove it first."
        )
    source = chunks_from_folder(docs, chunk_size, chunk_overlap, show_progress, follow_symlinks)
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = generate_qa_embedding_pairs(
        source.corpus,
        llm=llm,
        num_questions_per_chunk=questions_per_chunk,
        output_path=out,
        max_workers=max_workers,
        verbose=show_progress,
        confirm=ask_before_paid_calls(confirm),
    )
    if out.suffix.lower() in ROW_SUFFIXES:
        write_rows(dataset, source, out)  # replaces the dataset JSON just written there
    return dataset
