"""A folder of the user's documents into ``TextNode`` chunks whose ids follow their content.

Every file under the folder (recursively) that LlamaIndex's readers read as text is loaded; other
files and files that fail to read are listed with the reason and skipped, so one bad file never
stops the rest. A chunk's id is ``uuid5(NODE_NAMESPACE, "<relative path>:<sha256 of its text>")``
(plus ``#n`` for a repeated text within a file): editing one file changes the ids of that file's
changed chunks only, so a re-run embeds exactly what changed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

from llama_index.core.schema import Document, MetadataMode, TextNode
from tqdm.auto import tqdm

from adapterkit.data.documents import NODE_NAMESPACE
from adapterkit.data.files import sha256_of
from adapterkit.errors import AdapterkitError

PathLike = Union[str, "os.PathLike[str]"]

# Suffixes read as plain text (SimpleDirectoryReader's fallback); the others need a reader class.
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text", ".tex", ".org", ".adoc")
HTML_SUFFIXES = (".html", ".htm")
READER_SUFFIXES = (".pdf", ".docx", ".epub", ".ipynb", ".csv")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + READER_SUFFIXES


class DocumentFolderError(AdapterkitError, ValueError):
    """A folder that gives no readable document (missing, empty, or nothing in it could be read)."""


@dataclass
class FolderChunks:
    """What ``read_folder`` found.

    Attributes:
        nodes: the chunks, in file order then position, with metadata ``{"file_name", "file_path"}``.
        files: ``{relative path: sha256 of the file's bytes}`` of every file read.
        chunks_of: ``{relative path: [chunk ids]}``.
        skipped: ``{relative path: reason}`` for files not read.
    """

    nodes: List[TextNode]
    files: Dict[str, str]
    chunks_of: Dict[str, List[str]]
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def corpus(self) -> Dict[str, str]:
        """``{chunk id: text}`` (the text a model embeds: no metadata)."""
        return {n.node_id: n.get_content(metadata_mode=MetadataMode.NONE) for n in self.nodes}


def _readers() -> Dict[str, Any]:
    try:
        from llama_index.readers.file import DocxReader, EpubReader, IPYNBReader, PandasCSVReader, PDFReader
    except ImportError as exc:
        raise ImportError(
            "Reading PDF, DOCX, HTML and other documents needs LlamaIndex's file readers: pip install 'adapterkit[documents]'"
        ) from exc
    return {
        ".pdf": PDFReader(),
        ".docx": DocxReader(),
        ".epub": EpubReader(),
        ".ipynb": IPYNBReader(),
        ".csv": PandasCSVReader(concat_rows=True),
    }


def _html_text(path: Path) -> str:
    """The readable text of an HTML page: its ``main`` (else ``article``, else ``body``), without scripts,
    styles and navigation. LlamaIndex's ``HTMLTagReader`` reads one fixed tag, and a page's ``body``
    repeats its site navigation in every chunk, so the page's own content is picked here."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    lines = (" ".join(line.split()) for line in root.get_text(" ").splitlines())  # inline tags joined by spaces
    return "\n".join(line for line in lines if line)


def _read_one(path: Path, readers: Dict[str, Any]) -> List[Document]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [Document(text=path.read_text(encoding="utf-8", errors="strict"))]
    if suffix in HTML_SUFFIXES:
        return [Document(text=_html_text(path))]
    return list(readers[suffix].load_data(path))


def _files(root: Path, follow_symlinks: bool, skipped: Dict[str, str]) -> List[Path]:
    """Every file under ``root``; hidden names are left out, and links that leave ``root`` are listed in
    ``skipped`` unless ``follow_symlinks`` (a folder reached twice is read once; a link to a folder inside
    ``root`` is not followed, as that folder is read under its own name)."""
    real_root = root.resolve()
    found: List[Path] = []
    seen = {real_root}

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.startswith("."):
                continue
            name = entry.relative_to(root).as_posix()
            if entry.is_symlink():
                target = entry.resolve()
                if not target.exists():
                    skipped[name] = f"a link to {os.readlink(entry)}, which does not exist"
                    continue
                if not target.is_relative_to(real_root):
                    if not follow_symlinks:
                        skipped[name] = f"a link to {target}, outside the folder (follow_symlinks=True / --follow-symlinks reads it)"
                        continue
                elif target.is_dir():  # a link to a folder inside: read under its own name
                    continue
            if entry.is_dir():
                real = entry.resolve()
                if real in seen:  # a link back into a folder already read: reading it again would loop or repeat it
                    continue
                seen.add(real)
                walk(entry)
            elif entry.is_file():
                found.append(entry)
            else:  # a pipe, socket or device: reading one could block or never end
                skipped[name] = "not a regular file (a pipe, socket or device)"

    walk(root)
    return found


def read_folder(
    folder: PathLike, chunk_size: int = 1024, chunk_overlap: int = 200, show_progress: bool = True, follow_symlinks: bool = False
) -> FolderChunks:
    """Read every supported document under ``folder`` and split it into chunks with content-based ids.

    Args:
        folder: a directory; hidden files and folders (names starting with ".") are left out.
        chunk_size: ``SentenceSplitter`` chunk size in tokens (LlamaIndex's default, 1024).
        chunk_overlap: tokens shared by neighbouring chunks (LlamaIndex's default, 200).
        show_progress: a progress bar over the files.
        follow_symlinks: read what links in the folder point to outside it; by default such links are
            skipped and listed in ``skipped`` (a link must not make the folder read files it does not hold).

    Raises ``DocumentFolderError`` when the folder is missing or no file in it gives any text; the
    message lists what was skipped and why.

    Example::

        found = read_folder("my_docs")
        print(len(found.nodes), "chunks;", "skipped:", found.skipped)
    """
    from llama_index.core.node_parser import SentenceSplitter

    root = Path(folder)
    if not root.is_dir():
        raise DocumentFolderError(f"{root} is not a folder: pass the folder that holds your documents.")
    skipped: Dict[str, str] = {}
    paths = sorted(_files(root, follow_symlinks, skipped))
    readers = _readers() if any(p.suffix.lower() in READER_SUFFIXES for p in paths) else {}
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    nodes: List[TextNode] = []
    files: Dict[str, str] = {}
    chunks_of: Dict[str, List[str]] = {}
    for path in tqdm(paths, desc="Reading documents", unit="file", disable=not show_progress):
        name = path.relative_to(root).as_posix()
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped[name] = f"unsupported file type {path.suffix or '(none)'}"
            continue
        try:
            before = sha256_of(path)
            docs = _read_one(path, readers)
            if sha256_of(path) != before:  # written to while being read: its chunks may mix two versions
                raise OSError("the file changed while it was being read; run again once it is written")
        except ImportError as exc:  # a reader's own dependency (bs4 for HTML, docx2txt for DOCX, ...) is missing
            skipped[name] = f"a reader's package is missing ({exc}): pip install 'adapterkit[documents]'"
            continue
        except UnicodeDecodeError as exc:
            text_file = path.suffix.lower() in TEXT_SUFFIXES
            skipped[name] = "not UTF-8 text: save it as UTF-8 and run again" if text_file else f"unreadable: UnicodeDecodeError: {exc}"
            continue
        except Exception as exc:  # any reader error: skip this file, keep the others
            skipped[name] = f"unreadable: {type(exc).__name__}: {exc}"
            continue
        texts = [t for doc in docs for t in splitter.split_text(doc.get_content()) if t.strip()]
        if not texts:
            skipped[name] = "no text found (a scanned PDF needs OCR first)"
            continue
        seen: Dict[str, int] = {}
        ids = []
        for text in texts:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            seen[digest] = seen.get(digest, 0) + 1
            suffix = f"#{seen[digest]}" if seen[digest] > 1 else ""
            node_id = str(uuid.uuid5(NODE_NAMESPACE, f"{name}:{digest}{suffix}"))
            ids.append(node_id)
            # Metadata stays out of what a model embeds (and what an LLM is shown): a chunk's vector is its text's.
            nodes.append(
                TextNode(
                    id_=node_id,
                    text=text,
                    metadata={"file_name": path.name, "file_path": name},
                    excluded_embed_metadata_keys=["file_name", "file_path"],
                    excluded_llm_metadata_keys=["file_name", "file_path"],
                )
            )
        files[name], chunks_of[name] = before, ids
    if not nodes:
        found = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:10]) or "no files"
        raise DocumentFolderError(f"No readable document in {root} ({found}). Supported: {', '.join(SUPPORTED_SUFFIXES)}.")
    return FolderChunks(nodes, files, chunks_of, skipped)
