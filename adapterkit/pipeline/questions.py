"""``write_questions`` (the ``adapterkit questions`` command): an LLM's questions about a folder's chunks, resumable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from adapterkit.data.llms import ask_before_paid_calls
from adapterkit.data.questions import GeneratedQADataset, generate_qa_embedding_pairs
from adapterkit.pipeline.sources import chunks_from_folder

PathLike = Union[str, "os.PathLike[str]"]


def write_questions(docs: PathLike, out: PathLike, llm: Any = "default", questions_per_chunk: int = 2, max_workers: int = 4,
                    confirm: Optional[Callable[[str], bool]] = None, chunk_size: int = 1024, chunk_overlap: int = 200,
                    show_progress: bool = True) -> GeneratedQADataset:
    """Ask ``llm`` for questions about every chunk of ``docs``; write LlamaIndex's dataset JSON to ``out``.

    The chunk ids are the ones ``adapterkit fit`` gives the same folder, so the file can be passed to
    it as ``--questions``. Each answered chunk is journaled at once (``<out>.progress.jsonl``): a
    killed run loses only the calls in flight, and a re-run asks only the chunks not done (or changed).
    ``confirm`` is asked before a paid API is called, with the number of calls.
    """
    source = chunks_from_folder(docs, chunk_size, chunk_overlap, show_progress)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return generate_qa_embedding_pairs(source.corpus, llm=llm, num_questions_per_chunk=questions_per_chunk, output_path=out,
                                       max_workers=max_workers, verbose=show_progress, confirm=ask_before_paid_calls(confirm))
