"""What ``adapterkit fit`` and ``adapterkit eval`` write: ``report.md``, ``report.json`` and plots.

The report says where the scored questions came from (or that there were none), shows base next to
adapter with paired bootstrap intervals, what the held-out guard decided, how far queries move, what a
re-run changed and how many texts the base model embedded, and ends with the lines that serve the
model from an existing LlamaIndex index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pandas as pd

from adapterkit.atomic import write_text
from adapterkit.notebook.report import markdown_table

NO_EVALUATION = (
    "**There is no independent evaluation in this report.** No labelled questions (`--questions`) and no LLM "
    "(`--llm`) were given, and the label-free training signals (sentences of your chunks) cannot score the model: "
    "the corpus memory is built from those same sentences, so a score on them would be circular. What is shown "
    "instead is how far queries move and what the held-out guard decided. To measure the gain, give `--llm` "
    "(questions written about sampled chunks) or `--questions`."
)


def serving_lines(folder: Path, embed_spec: Optional[str], docs: Optional[str] = None) -> str:
    """How to serve the model folder: from your existing store, or (a folder fit) from an index the ``index`` command builds."""
    base = f'resolve_embed_model("{embed_spec}")' if embed_spec else "your_base_embed_model  # the model that built the index"
    lines = []
    if docs is not None:
        index = folder.parent / f"{folder.name}-index"
        spec = f" --embed-model {embed_spec}" if embed_spec and embed_spec != "default" else ""
        lines += [
            "Index the documents once with the base model and the same chunk ids (again after they change; a re-run "
            "replaces what it wrote), then serve the folder from that index:",
            "",
            "```bash",
            f'adapterkit index {json.dumps(docs)} --store "qdrant://{index.resolve()}?collection=chunks"{spec}',
            "```",
            "",
        ]
    lines += [
        "```python",
        "from llama_index.core import VectorStoreIndex",
        "from adapterkit import AdapterEmbeddingModel, resolve_embed_model",
    ]
    if docs is not None:
        lines += ["from llama_index.vector_stores.qdrant import QdrantVectorStore", "from qdrant_client import QdrantClient"]
    lines += ["", f"embed_model = AdapterEmbeddingModel({base}, {json.dumps(str(folder))})"]
    if docs is not None:
        lines += [
            f'vector_store = QdrantVectorStore(client=QdrantClient(path={json.dumps(str(index.resolve()))}), collection_name="chunks")',
            "# or your existing store of these chunks: documents keep their base vectors, only queries go through the adapter",
        ]
    else:
        lines += ["# your existing store: documents keep their base vectors, only queries go through the adapter"]
    lines += [
        "index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model)",
        "retriever = index.as_retriever(similarity_top_k=5)",
        "```",
        "",
        "Rankings are what the evaluation measured; the cosine scores of adapted queries differ from the base "
        "model's, so a `similarity_cutoff` (or any score threshold) tuned on base scores must be tuned again.",
    ]
    return "\n".join(lines)


def _table_md(table: pd.DataFrame) -> str:
    columns = [c for c in table.columns]
    return markdown_table(columns, table.values.tolist())


NO_PLOTS = "No plots: they need matplotlib and pillow (pip install 'adapterkit[notebooks]'); the tables above hold the same numbers."


def _plots(folder: Path, frames: Mapping[str, pd.DataFrame], engine: Any = None) -> List[str]:
    """The report's PNG plots (their names); none when matplotlib is not installed, which the report says."""
    try:
        from adapterkit.notebook.plots import plot_hit_rate_at_k, plot_loss, plot_rank_movement
    except ImportError:
        return []
    written = []
    if engine is not None and engine.loss_history:
        plot_loss(engine.loss_history, engine.epoch_loss, engine.val_mrr or None, path=folder / "loss.png")
        written.append("loss.png")
    if frames:
        plot_hit_rate_at_k(frames, path=folder / "hit_rate_at_k.png")
        plot_rank_movement(frames["base"], frames["adapter"], path=folder / "rank_movement.png")
        written += ["hit_rate_at_k.png", "rank_movement.png"]
    return written


def data_sources(train: Any, engine: Any, corpus: Dict[str, str], yours: Any) -> List[str]:
    """Every data source that trained the model, in words, for the report."""
    pseudo = len(engine.groups[-1].queries) if len(engine.groups) > 1 else 0
    sources = [
        f"the walkthrough's published Lyft 2021 10-K questions ({len(train.queries)} questions over {len(train.corpus)} chunks), "
        "the labelled side",
        f"{pseudo} pseudo-queries (sentences of your {len(corpus)} chunks)",
    ]
    if yours is not None:
        sources.append(f"{len(yours.queries)} of your questions, as evidence for a memory of them")
    return sources


def verdict(engine: Any, result: Any) -> str:
    """The report's first line: which model was kept, on what evidence, and why."""
    epoch = engine.best_epoch or 0
    names = {"sentences": "your chunks' sentences", "questions": "your questions"}
    memories = [names.get(m, m) for m in sorted(engine.memories)] + (
        ["your chunks' sentences (in the database)"] if result.database_memory else []
    )
    parts = [f"a memory of {m}" for m in memories]
    if epoch:
        kept = "Kept: the adapter of epoch " + str(epoch) + "".join(f" and {p}" for p in parts)
    else:
        kept = ("Kept: the base model (no adapter) with " + " and ".join(parts)) if parts else "Kept: the base model unchanged"
    held = sum(len(g.val_idx) for g in engine.groups)
    why = [
        f"epoch {epoch} beat the start by more than its standard error on {held} held-out training queries"
        if epoch
        else f"no training epoch beat the start by more than its standard error on {held} held-out training queries"
    ]
    choice = engine.memory_choice
    if choice:
        asked = choice["held_out_questions"]
        default = choice["default"] == "/".join(
            map(str, (choice["question_weight"], choice["question_temperature"], choice["sentence_weight"]))
        )
        why.append(
            f"your {asked} labelled questions "
            + ("showed no clear gain from a memory of them" if default else "gained clearly from a memory of them")
        )
    line = f"{kept} ({'; '.join(why)})."
    table = result.table
    if table is not None and len(table) > 1:
        row = table.iloc[1]
        line += (
            f" On {len(result.evaluation.dataset.queries)} held-out questions: MRR@5 {table.iloc[0]['mrr@5']:.3f} → {row['mrr@5']:.3f}, "
            f"Δ {row['Δmrr@5']} {row['Δmrr@5 95%']} (95%)."
        )
    else:
        line += " No held-out questions scored it (give --questions or --llm)."
    return line


def write_fit_report(
    result: Any, engine: Any, source: Any, frames: Mapping[str, pd.DataFrame], movement: Mapping[str, Any], into: Optional[Path] = None
) -> Dict[str, Any]:
    """Write ``report.md`` and ``report.json`` into the model folder (or ``into``, where it is staged); returns the JSON's content."""
    folder, evaluation = Path(result.folder), result.evaluation
    target = Path(into) if into is not None else folder
    manifest = json.loads((target / "fit.json").read_text())
    guard = {
        "best_epoch": engine.best_epoch,
        "held_out_mrr@10_per_epoch": [round(v, 4) for v in engine.val_mrr],
        "memories": sorted(engine.memories),
        "memory_choice": engine.memory_choice,
    }
    summary = {
        "origin": source.origin,
        "files": len(source.files),
        "chunks": len(source.corpus),
        "skipped": source.skipped,
        "changes": result.changes,
        "embedded_by_base_model": result.embedded,
        "seconds": result.seconds,
        "evaluation": {"kind": evaluation.kind, "source": evaluation.source, **evaluation.details},
        "table": result.table.to_dict(orient="records") if result.table is not None else None,
        "guard": guard,
        "query_movement": dict(movement),
        "stored_chunks": source.stored,
        "database_memory": result.database_memory,
    }
    plots = _plots(target, frames, engine)
    summary["verdict"] = verdict(engine, result)
    summary["trained_on"] = list(result.trained_on)
    lines = [f"# Adapter for {source.origin}", "", f"**{summary['verdict']}**", ""]
    if result.trained_on:
        lines += ["Trained on: " + "; ".join(result.trained_on) + ".", ""]
    where = f"{len(source.files)} files" if source.files else "the store"
    lines += [
        f"{len(source.corpus)} chunks from {where}; base model `{manifest['embed_model']}`; "
        f"{result.seconds} s; the base model embedded {result.embedded['text']} chunks and {result.embedded['query']} queries "
        "in this run (the rest came from the cache or the store).",
        "",
    ]
    if source.stored is not None:
        lines += [
            f"Training read {len(source.corpus)} of the store's {source.stored} chunks: the chunks your questions name and a "
            "fixed sample of the rest. The evaluation ranks each question among all of them."
            + (
                ""
                if result.database_memory
                else " No sentence memory was built (one of the sample would pull queries toward "
                "sampled chunks only; `--memory-table` builds one of every chunk)."
            ),
            "",
        ]
    if result.database_memory:
        m = result.database_memory
        cap = "every sentence" if m["max_keys"] is None else f"at most {m['max_keys']} per chunk"
        where = "url" if m["kind"] == "PgMemory" else "client"
        lines += [
            f"Sentence memory: `{m['name']}` in the store's own database ({m['kind']}), {m['keys']} keys ({cap}) for every stored "
            f'chunk. Serve it with `AdapterEmbeddingModel(base, "{folder}", memory=[{m["kind"]}({where}, "{m["name"]}")])` '
            "(with the folder's own memories, if any, in that list).",
            "",
        ]
    if source.skipped:
        lines += ["Skipped files:", ""] + [f"- `{name}`: {why}" for name, why in source.skipped.items()] + [""]
    c = result.changes
    if not c["first_run"]:
        lines += [
            "## Since the last run",
            "",
            f"Files added {c['files_added'] or 'none'}, changed {c['files_changed'] or 'none'}, removed {c['files_removed'] or 'none'}; "
            f"chunks added {c['chunks_added']}, removed {c['chunks_removed']}, unchanged {c['chunks_unchanged']}.",
            "",
        ]
    lines += ["## Evaluation", "", f"Questions scored: {evaluation.source}."]
    if evaluation.details:
        lines += [
            "",
            ", ".join(f"{k.replace('_', ' ')}: {len(v) if isinstance(v, dict) else v}" for k, v in evaluation.details.items()) + ".",
        ]
        left_out = evaluation.details.get("left_out") or {}
        lines += (["", "Questions left out:", ""] + [f"- {q!r}: {why}" for q, why in left_out.items()]) if left_out else []
    lines += [""]
    if result.table is not None:
        lines += [_table_md(result.table), "", "Δ: adapter minus base, with a paired bootstrap 95% interval over the questions.", ""]
    elif evaluation.kind == "llm":
        lines += ["The LLM wrote no usable question, so nothing could be scored; try another `--llm`.", ""]
    else:
        lines += [NO_EVALUATION, ""]
    lines += [
        "## What training decided",
        "",
        (
            f"Epoch kept: {engine.best_epoch}: it scored higher than the start on held-out chunks by more than its standard error, "
            "and no lower on either held-out group (your chunks, the labelled questions' chunks). "
            if engine.best_epoch
            else "Epoch kept: none (the adapter is the identity): no epoch scored higher than the start on held-out chunks by more than "
            "its standard error without scoring lower on one of the held-out groups (your chunks, the labelled questions' chunks). "
        )
        + f"Held-out MRR@10 per epoch, on sentences of held-out chunks (a selection signal, not an evaluation): "
        f"{guard['held_out_mrr@10_per_epoch']}. Memories saved: {guard['memories'] or 'none'}.",
        "",
    ]
    if movement:
        lines += [
            f"Query movement on {movement['sentences']} sentences of your chunks: median cosine between base and served "
            f"vector {movement['median_cosine_base_vs_served']}, lowest {movement['min_cosine_base_vs_served']}; the nearest "
            f"chunk changes for {movement['share_whose_nearest_chunk_changes']:.0%} of them.",
            "",
        ]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [NO_PLOTS, ""])
    lines += ["## Use it", "", serving_lines(folder, manifest.get("embed_spec"), source.origin if source.store is None else None), ""]
    if engine.memories or result.database_memory:
        lines += [
            "LlamaIndex's own `AdapterEmbeddingModel` (llama-index-embeddings-adapter) serves this folder's adapter alone, "
            "without its memory, so it would not score what was evaluated here: serve the folder with adapterkit's class.",
            "",
        ]
    write_text(target / "report.md", "\n".join(lines))
    write_text(target / "report.json", json.dumps(summary, indent=1, default=str))
    return summary


def write_eval_report(out: Path, model_folder: Path, questions: Path, table: pd.DataFrame, frames: Mapping[str, pd.DataFrame]) -> Path:
    """``eval.md`` / ``eval.json`` / plots in ``out``: base next to the adapter on a questions file."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(out, frames)
    lines = [
        f"# {model_folder} on {questions.name}",
        "",
        f"{len(frames['base'])} questions over {questions.name}'s corpus.",
        "",
        _table_md(table),
        "",
        "Δ: adapter minus base, with a paired bootstrap 95% interval over the questions.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    write_text(out / "eval.md", "\n".join(lines) + "\n")
    write_text(
        out / "eval.json",
        json.dumps({"model": str(model_folder), "questions": str(questions), "table": table.to_dict(orient="records")}, indent=1),
    )
    return out / "eval.md"
