"""(query, relevant chunks) datasets in LlamaIndex's format, checked before anything is embedded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.schema import BaseNode, MetadataMode

from adapterkit.atomic import write_text
from adapterkit.errors import AdapterkitError

__all__ = ["EmbeddingQAFinetuneDataset", "DatasetError", "node_texts"]


class DatasetError(AdapterkitError, ValueError):
    """A dataset is empty, malformed or refers to chunks it does not hold."""


def node_texts(nodes: Union[Mapping[str, str], Sequence[BaseNode]]) -> Dict[str, str]:
    """``{node id: text}`` of LlamaIndex nodes (their text without metadata), or of an ``{id: text}`` mapping."""
    if isinstance(nodes, Mapping):
        return {str(k): str(v) for k, v in nodes.items()}
    return {n.node_id: n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes}


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    seen: Dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DatasetError(f"Duplicate id {key!r} in the dataset JSON: ids must be unique; rename or drop one.")
        seen[key] = value
    return seen


class EmbeddingQAFinetuneDataset(BaseModel):
    """LlamaIndex's ``EmbeddingQAFinetuneDataset`` (same fields, JSON and methods) plus checks.

    LlamaIndex keeps this class in ``llama-index-finetuning``; adapterkit does not need that package,
    and ``model_dump()`` of either class builds the other.

    Attributes:
        queries: ``{query_id: query text}``.
        corpus: ``{node_id: chunk text}``.
        relevant_docs: ``{query_id: [node_id, ...]}``; every id must be in ``corpus``.
        mode: ``"text"`` (LlamaIndex's default; files without the key read as text).

    Example::

        ds = EmbeddingQAFinetuneDataset.from_json("val_dataset.json")
        ds.validate()
        ds.save_json("copy.json")
    """

    queries: Dict[str, str]
    corpus: Dict[str, str]
    relevant_docs: Dict[str, List[str]]
    mode: str = "text"

    @property
    def query_docid_pairs(self) -> List[Tuple[str, List[str]]]:
        """``[(query text, relevant node ids)]``, as in LlamaIndex."""
        return [(query, self.relevant_docs[qid]) for qid, query in self.queries.items()]

    def restrict(self, chunk_ids: Iterable[str]) -> "EmbeddingQAFinetuneDataset":
        """The chunks in ``chunk_ids`` (corpus order kept) and the queries whose first relevant chunk is one of them."""
        keep = set(chunk_ids)
        qids = [q for q, docs in self.relevant_docs.items() if docs[0] in keep]
        return EmbeddingQAFinetuneDataset(
            queries={q: self.queries[q] for q in qids},
            corpus={d: text for d, text in self.corpus.items() if d in keep},
            relevant_docs={q: [d for d in self.relevant_docs[q] if d in keep] for q in qids},
        )

    def with_queries(self, query_ids: Iterable[str]) -> "EmbeddingQAFinetuneDataset":
        """These queries (in this order) over the whole corpus: e.g. a held-out part of the questions."""
        qids = [q for q in query_ids if q in self.queries]
        return EmbeddingQAFinetuneDataset(
            queries={q: self.queries[q] for q in qids},
            corpus=dict(self.corpus),
            relevant_docs={q: list(self.relevant_docs[q]) for q in qids},
        )

    def save_json(self, path: str | os.PathLike) -> None:
        """Write LlamaIndex's JSON format (atomically: a crash leaves the old file)."""
        write_text(path, json.dumps(self.model_dump(), indent=4))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "EmbeddingQAFinetuneDataset":
        """Read LlamaIndex's JSON (with or without ``"mode"``) and validate it."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(
                f"Dataset file {path} not found. Get the walkthrough's files with "
                "adapterkit.data.files.get_file('train_dataset.json'), or pass the path of your own dataset."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 JSON.") from exc
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc}).") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "the dataset") -> "EmbeddingQAFinetuneDataset":
        """Build from ``{"queries", "corpus", "relevant_docs"[, "mode"]}`` and validate."""
        expected = {"queries", "corpus", "relevant_docs"}
        if not isinstance(data, dict) or not expected <= set(data):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DatasetError(
                f"{source} is not an EmbeddingQAFinetuneDataset: expected an object with keys "
                f"{sorted(expected)} (and optionally 'mode'), got {got}."
            )
        for key in expected:
            if not isinstance(data[key], dict):
                raise DatasetError(f"{source}: '{key}' must be an object of id -> value, got {type(data[key]).__name__}.")
            bad = next((k for k in data[key] if not isinstance(k, str)), None)
            if bad is not None:
                raise DatasetError(f"{source}: {key} has the id {bad!r} ({type(bad).__name__}); ids must be strings.")
        relevant = {}
        for qid, docs in data["relevant_docs"].items():
            if isinstance(docs, str):  # a single id written without a list
                docs = [docs]
            if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
                raise DatasetError(f"{source}: relevant_docs[{qid!r}] must be a list of corpus ids (strings), got {docs!r}.")
            relevant[qid] = docs
        for key in ("queries", "corpus"):
            bad = next((k for k, v in data[key].items() if not isinstance(v, str)), None)
            if bad is not None:
                raise DatasetError(f"{source}: {key}[{bad!r}] must be text, got {type(data[key][bad]).__name__}.")
        extra = {k: data[k] for k in ("mode",) if k in data}
        if not isinstance(extra.get("mode", "text"), str):
            raise DatasetError(f"{source}: 'mode' must be a string such as 'text'.")
        dataset = cls(queries=data["queries"], corpus=data["corpus"], relevant_docs=relevant, **extra)
        return dataset.validate(source)

    # replaces pydantic v1's deprecated classmethod BaseModel.validate, which adapterkit never calls
    def validate(self, source: str = "the dataset") -> "EmbeddingQAFinetuneDataset":  # type: ignore[override]
        """Raise a ``DatasetError`` that names the problem; return ``self`` when all is well."""
        if not self.queries:
            raise DatasetError(f"{source} has no queries: add (query, relevant chunk) pairs or generate them.")
        if not self.corpus:
            raise DatasetError(f"{source} has an empty corpus: it needs the chunks the queries refer to.")
        for qid in self.queries:
            docs = self.relevant_docs.get(qid)
            if not docs:
                raise DatasetError(
                    f"Query {qid!r} ({self.queries[qid][:60]!r}) has no relevant doc in relevant_docs; "
                    "give it at least one corpus id or drop it."
                )
            missing = [d for d in docs if d not in self.corpus]
            if missing:
                raise DatasetError(
                    f"Query {qid!r} names relevant doc {missing[0]!r}, which is not in the corpus; "
                    "add that chunk to the corpus or drop the query."
                )
        for name, table in (("queries", self.queries), ("corpus", self.corpus)):
            bad = next((k for k, v in table.items() if not isinstance(v, str)), None)
            if bad is not None:
                raise DatasetError(f"{source}: {name}[{bad!r}] must be text.")
            bad = next((k for k, v in table.items() if not is_unicode(k) or not is_unicode(v)), None)
            if bad is not None:
                raise DatasetError(
                    f"{source}: {name}[{bad!r}] holds a lone surrogate (broken Unicode, often from a "
                    "bad decode); fix the text, e.g. text.encode('utf-8', 'replace').decode()."
                )
        return self

    @classmethod
    def from_beir(
        cls, corpus_file: str | os.PathLike, queries_file: str | os.PathLike, qrels_file: str | os.PathLike, min_score: int = 1
    ) -> "EmbeddingQAFinetuneDataset":
        """A BEIR dataset split (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) in this format.

        The corpus is the whole corpus (documents are ``title + " " + text``, as BEIR's own evaluation
        embeds them); the queries are those of the qrels file, relevant where the score is at least
        ``min_score``. Read as text and JSON only.
        """

        def lines(path: str | os.PathLike) -> List[str]:
            try:
                return Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"Cannot read the BEIR file {path} ({exc}).") from exc

        try:
            docs = [json.loads(line) for line in lines(corpus_file) if line.strip()]
            corpus = {str(d["_id"]): (str(d.get("title", "")) + " " + str(d["text"])).strip() for d in docs}
            all_queries = {str(q["_id"]): str(q["text"]) for q in (json.loads(line) for line in lines(queries_file) if line.strip())}
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{corpus_file} or {queries_file} is not BEIR JSON lines with _id and text ({exc}).") from exc
        relevant: Dict[str, List[str]] = {}
        for row in lines(qrels_file)[1:]:  # a header row, then query-id, corpus-id, score (CRLF line ends)
            parts = row.strip().split("\t")
            if len(parts) == 3 and parts[2].lstrip("-").isdigit() and int(parts[2]) >= min_score:
                relevant.setdefault(parts[0], []).append(parts[1])
        queries = {q: all_queries[q] for q in relevant if q in all_queries}
        return cls.from_dict(
            {"queries": queries, "corpus": corpus, "relevant_docs": {q: relevant[q] for q in queries}}, source=str(qrels_file)
        )

    @property
    def first_relevant(self) -> Dict[str, str]:
        """``{query_id: first relevant node_id}``: the positive a training pair uses."""
        return {qid: self.relevant_docs[qid][0] for qid in self.queries}
