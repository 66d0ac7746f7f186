"""The walkthrough's question sets: the published ones, or ones generated from chunks by an LLM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from llama_index.core.schema import BaseNode

from adapterkit.data.datasets import DatasetError, EmbeddingQAFinetuneDataset
from adapterkit.data.files import get_file

PathLike = Union[str, "os.PathLike[str]"]


def load_qa_datasets(source: PathLike = "published") -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """``(train, val)`` question sets.

    Args:
        source: ``"published"`` for LlamaIndex's published Lyft (train) and Uber (val) sets,
            ``"scifact"`` for BEIR SciFact (train and test claims over its 5,183 abstracts), or a
            folder holding ``train_dataset.json`` and ``val_dataset.json`` (what ``01_dataset``
            writes to its ``output_dir``).
    """
    if str(source) == "scifact":
        files = [get_file(f"scifact/{name}") for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv")]
        return (
            EmbeddingQAFinetuneDataset.from_beir(files[0], files[1], files[2]),
            EmbeddingQAFinetuneDataset.from_beir(files[0], files[1], files[3]),
        )
    if str(source) == "published":
        return (
            EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json")),
            EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json")),
        )
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Data source {folder} is not a folder: use 'published' or the output_dir of 01_dataset "
            "(it holds train_dataset.json and val_dataset.json)."
        )
    return (
        EmbeddingQAFinetuneDataset.from_json(folder / "train_dataset.json"),
        EmbeddingQAFinetuneDataset.from_json(folder / "val_dataset.json"),
    )


def _as_dataset(obj: Any, name: str) -> EmbeddingQAFinetuneDataset:
    if not isinstance(obj, EmbeddingQAFinetuneDataset):  # e.g. LlamaIndex's own class
        obj = EmbeddingQAFinetuneDataset.from_dict(obj.model_dump() if hasattr(obj, "model_dump") else obj, source=name)
    if not obj.queries:
        raise DatasetError(
            f"The LLM gave no usable question for the {name} ({len(obj.corpus)} chunks). Use a stronger LLM "
            "(e.g. llm='openai:gpt-4o-mini'), more pages (max_pages=None), or llm=None for the published sets."
        )
    return obj.validate(name)


def qa_datasets(
    train_nodes: Sequence[BaseNode],
    val_nodes: Sequence[BaseNode],
    llm: Any = None,
    num_questions_per_chunk: int = 2,
    output_dir: Optional[PathLike] = None,
) -> Tuple[EmbeddingQAFinetuneDataset, EmbeddingQAFinetuneDataset]:
    """``(train, val)``: the published question sets, or questions generated over the nodes by an LLM.

    Args:
        train_nodes: chunks to ask training questions about (Lyft).
        val_nodes: chunks to ask evaluation questions about (Uber).
        llm: None for the published sets (offline, the walkthrough's own questions; their corpus is
            the walkthrough's chunking, not ``train_nodes``); a spec string for ``resolve_llm``
            (``"default"``: the offline SmolLM2) or a LlamaIndex ``LLM`` to generate new questions.
        num_questions_per_chunk: questions per chunk when generating.
        output_dir: where ``train_dataset.json`` and ``val_dataset.json`` are written (None: nowhere).
    """
    if llm is None:
        train, val = load_qa_datasets("published")
    else:
        try:  # written separately; imported only when questions are generated
            from adapterkit.data.questions import generate_qa_embedding_pairs
        except ImportError as exc:
            raise ImportError(
                "Generating questions needs adapterkit.data.questions (generate_qa_embedding_pairs), which this "
                "installation lacks; set llm=None to use the published question sets."
            ) from exc
        out = Path(output_dir) if output_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        made = []
        for name, nodes in (("train_dataset.json", train_nodes), ("val_dataset.json", val_nodes)):
            # A spec string is resolved by adapterkit.data.questions (adapterkit.data.llms.resolve_llm), once it is needed.
            kwargs: Dict[str, Any] = {"llm": llm, "num_questions_per_chunk": num_questions_per_chunk}
            if out is not None:
                kwargs["output_path"] = str(out / name)
            made.append(_as_dataset(generate_qa_embedding_pairs(list(nodes), **kwargs), f"generated {name[:-5].replace('_', ' ')}"))
        train, val = made
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        train.save_json(out / "train_dataset.json")
        val.save_json(out / "val_dataset.json")
    return train, val
