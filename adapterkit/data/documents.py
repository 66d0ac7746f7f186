"""Documents into LlamaIndex ``TextNode`` chunks with stable ids, and chunks into sentences."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union, cast

from llama_index.core.schema import Document, TextNode
from tqdm.auto import tqdm

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
from adapterkit.data.files import FILES, get_file

# Node ids are uuid5(NODE_NAMESPACE, "<file>:<page>:<chunk>"): UUID-shaped (vector stores such as
# Qdrant accept them) and the same on every machine and every run.
NODE_NAMESPACE = uuid.UUID("6f1e2d3c-0b4a-5e6f-8a9b-0c1d2e3f4a5b")


PathLike = Union[str, "os.PathLike[str]"]


def resolve_pdf(name_or_path: PathLike) -> Path:
    """A local path for a walkthrough file name (``"lyft_2021.pdf"``, via ``get_file``) or any path."""
    if isinstance(name_or_path, str) and name_or_path in FILES:
        return get_file(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass a PDF path or one of {sorted(n for n in FILES if n.endswith('.pdf'))}.")
    return path


def _stable_id(i: int, doc: Document) -> str:  # the splitter is only given Documents (load_corpus)
    return str(uuid.uuid5(NODE_NAMESPACE, f"{doc.doc_id}:{i}"))


def load_corpus(
    files: Sequence[PathLike],
    chunk_size: int = 1024,
    chunk_overlap: int = 200,
    max_pages: Optional[int] = None,
    show_progress: bool = True,
) -> List[TextNode]:
    """Read PDFs (one ``Document`` per page) and split them into ``TextNode`` chunks.

    Args:
        files: walkthrough names (``"lyft_2021.pdf"``, ``"uber_2021.pdf"``) or paths to PDFs.
        chunk_size: ``SentenceSplitter`` chunk size in tokens (LlamaIndex's default, 1024).
        chunk_overlap: tokens shared by neighbouring chunks (LlamaIndex's default, 200).
        max_pages: keep only the first pages of each file (quick trials, tests); None keeps all.
        show_progress: progress bars over the files read and the pages split.

    Returns:
        Nodes with ids ``uuid5(NODE_NAMESPACE, "<file>:page<k>:<chunk>")`` and metadata
        ``{"file_name", "page_label"}``: the same nodes, ids and boundaries on every run.
    """
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.node_parser import SentenceSplitter

    docs: List[Document] = []
    paths = [resolve_pdf(f) for f in files]
    for path in tqdm(paths, desc="Reading PDFs", unit="file", disable=not show_progress):
        # file_metadata replaces the reader's defaults (absolute path, file dates): only what is stable.
        reader = SimpleDirectoryReader(input_files=[str(path)], file_metadata=lambda p: {"file_name": Path(p).name})
        pages = reader.load_data()
        if max_pages is not None:
            pages = pages[:max_pages]
        for k, page in enumerate(pages):
            page.id_ = f"{path.name}:page{k}"
            page.metadata = {"file_name": path.name, "page_label": str(page.metadata.get("page_label", k + 1))}
        docs.extend(pages)
    parser = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, id_func=_stable_id)
    # SentenceSplitter builds TextNode chunks; its interface is typed with BaseNode
    return cast(List[TextNode], parser.get_nodes_from_documents(docs, show_progress=show_progress))


def corpus_to_nodes(corpus: Union[EmbeddingQAFinetuneDataset, Dict[str, str]]) -> List[TextNode]:
    """``TextNode`` objects for a dataset's corpus, keeping its ids (so relevant_docs still point at them)."""
    if isinstance(corpus, EmbeddingQAFinetuneDataset):
        corpus = corpus.corpus
    return [TextNode(id_=node_id, text=text) for node_id, text in corpus.items()]


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def chunk_sentences(text: str, min_words: int = 6, most: Optional[int] = None) -> List[str]:
    """The sentences of ``text`` (split after . ! ?) with at least ``min_words`` words.

    With ``most``, at most that many: the ones whose text hashes smallest, in text order, so the
    choice depends on the sentences alone (not on the chunk's position, a seed or the machine)."""
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise ValueError(f"most is the number of sentences to keep: None (all) or an int >= 1, got {most!r}.")
    found = [x.strip() for x in _SENTENCE.split(" ".join(text.split())) if len(x.split()) >= min_words]
    if most is None or len(found) <= most:
        return found
    rank = sorted(range(len(found)), key=lambda i: (hashlib.blake2b(found[i].encode("utf-8", "surrogatepass"), digest_size=8).digest(), i))
    return [found[i] for i in sorted(rank[:most])]
