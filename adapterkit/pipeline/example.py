"""A public stand-in for "your documents": labelled benchmark chunks written out as a folder of files.

``write_example_folder`` writes each chunk of a dataset (e.g. SciFact abstracts) as a text file and
its questions as a questions file a person would write (rows of question and file, ``question_rows``),
so the whole your-documents path (folder -> fit -> report -> serve) runs on data anyone has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Tuple, Union

from adapterkit.atomic import write_text
from adapterkit.data.datasets import EmbeddingQAFinetuneDataset

PathLike = Union[str, "os.PathLike[str]"]


def write_example_folder(
    dataset: EmbeddingQAFinetuneDataset, folder: PathLike, questions: int = 100, other_documents: int = 100
) -> Tuple[Path, Path]:
    """Write ``questions`` questions' relevant chunks plus ``other_documents`` other chunks as ``.txt`` files.

    Args:
        dataset: labelled questions over a corpus (``load_qa_datasets("scifact")[1]``, for example).
        folder: where ``docs/`` (one file per chunk) and ``questions.jsonl`` are written.
        questions: the first questions of ``dataset`` to keep.
        other_documents: further chunks, the first ones in corpus order that no kept question is about
            (searched, asked about by none).

    Returns:
        ``(docs folder, questions file)``: pass them to ``fit_documents`` / ``adapterkit fit --questions``.
    """
    qids = list(dataset.queries)[:questions]
    if not qids:
        raise ValueError("The dataset has no questions to write.")
    relevant = list(dict.fromkeys(d for q in qids for d in dataset.relevant_docs[q]))
    others = [d for d in dataset.corpus if d not in set(relevant)][:other_documents]
    docs = Path(folder) / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for doc_id in relevant + others:
        (docs / f"{doc_id}.txt").write_text(dataset.corpus[doc_id], encoding="utf-8")
    rows = [{"question": dataset.queries[q], "file": f"{d}.txt"} for q in qids for d in dataset.relevant_docs[q]]
    path = Path(folder) / "questions.jsonl"
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return docs, path
