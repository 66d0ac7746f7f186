"""The LlamaIndex adapter walkthrough, end to end, on the offline default: what ``make walkthrough`` runs.

First the script part: base model vs linear adapters trained on the Lyft 10-K questions (the
walkthrough's recipe, adapterkit's defaults, and those defaults with the Uber chunks as an
unlabelled target corpus), evaluated on the Uber 10-K questions; each adapter is saved, reloaded,
checked to serve the same query vectors as the trained one, and loaded in LlamaIndex's
``AdapterEmbeddingModel``. Then every notebook runs headless (papermill) and ``summary.md``
collects the script's table and every notebook's tables and plots. Run::

    python -m adapterkit.notebook.walkthrough --output-dir reports
    python -m adapterkit.notebook.walkthrough --output-dir /tmp/w --max-chunks 20 --epochs 1 --notebooks 01 -p max_pages 2

Exit status 1 when any part fails (the summary says which).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from adapterkit import (
    AdapterEmbeddingModel,
    EmbeddingAdapterFinetuneEngine,
    display_results,
    evaluate,
    load_qa_datasets,
    resolve_embed_model,
)
from adapterkit.cache import embed_texts
from adapterkit.notebook.displays import llamaindex_loads
from adapterkit.notebook.report import save_results, write_summary
from adapterkit.notebook.run_notebooks import (
    NotebookRun,
    find_notebooks,
    parse_value,
    run_notebooks,
)
from adapterkit.query_vectors import adapt_queries
from adapterkit.training.engine import LLAMAINDEX_RECIPE

SCRIPT_DIR = "walkthrough"  # the script part's folder inside the output folder


def load_walkthrough_data(max_chunks: Optional[int] = None) -> tuple:
    """The published Lyft (train) and Uber (val) question sets; ``max_chunks``: only the first chunks of each, with their questions."""
    train, val = load_qa_datasets("published")
    if max_chunks is not None:
        if max_chunks < 5:
            raise ValueError(f"max_chunks={max_chunks}: the engine holds out a fifth of the chunks; give at least 5.")
        train, val = (d.restrict(list(d.corpus)[:max_chunks]) for d in (train, val))
    return train, val


def run(
    embed: str = "default",
    epochs: int = 4,
    top_k: int = 5,
    output_dir: str = "reports/walkthrough",
    max_chunks: Optional[int] = None,
    **engine_kwargs: Any,
) -> Dict[str, Any]:
    """Train and evaluate as the walkthrough does; save the table for the summary and return it as a dict.

    Args:
        embed: base model spec (``resolve_embed_model``).
        epochs: epochs of LlamaIndex's walkthrough recipe (the other recipes use the engine's defaults).
        top_k: cut-off for hit-rate and MRR.
        output_dir: gets one adapter folder per recipe and ``results.json``.
        max_chunks: None for the published sets; a number keeps only the first chunks (a quick run).
        engine_kwargs: passed to every ``EmbeddingAdapterFinetuneEngine`` (e.g. ``epochs`` for all recipes).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, val = load_walkthrough_data(max_chunks)
    base_model = resolve_embed_model(embed)

    t0 = time.perf_counter()
    base = evaluate(val, base_model, top_k=top_k, verbose=True)
    seconds = {"base evaluation (incl. embedding)": time.perf_counter() - t0}
    names, results = [f"{base_model.model_name} (base)"], [base]
    recipes = {
        "walkthrough recipe": {"epochs": epochs, **LLAMAINDEX_RECIPE},
        "adapterkit defaults": {},
        # Adapt to the corpus being searched: label-free pseudo-queries from the Uber chunks (never its questions).
        "adapterkit defaults + Uber chunks unlabelled": {"unlabeled_corpus": val.corpus},
    }
    questions = list(val.queries.values())
    base_queries = embed_texts(base_model, questions, "query", show_progress=False)
    for name, recipe in recipes.items():
        folder = out / name.replace(" + ", "_").replace(" ", "_")
        t0 = time.perf_counter()
        engine = EmbeddingAdapterFinetuneEngine(train, base_model, **{**recipe, **engine_kwargs, "model_output_path": folder})
        engine.finetune()
        seconds[f"{name}: engine incl. embedding and training"] = time.perf_counter() - t0
        reloaded = AdapterEmbeddingModel(base_model, folder)
        # The served vectors of the model in memory, through the function serving uses, against the folder's.
        trained = adapt_queries(engine.model, base_queries, list(engine.memories.values()))
        if not np.allclose(trained, reloaded.embed(questions, "query"), atol=1e-6):
            raise RuntimeError(f"The adapter reloaded from {folder} maps queries differently from the trained one.")
        print(
            f"Saved {name} adapter to {folder}; reloaded: the same query vectors; LlamaIndex's class loads it as "
            f"{llamaindex_loads(base_model, folder)}."
        )
        kind = "linear adapter + corpus memory" if engine.memories else "linear adapter"
        names.append(f"{kind}, {name} ({engine.config.epochs} epochs)")
        results.append(evaluate(val, reloaded, top_k=top_k))

    table = display_results(names, results, show=True)
    timing = pd.DataFrame({"step": list(seconds), "seconds": [round(s, 2) for s in seconds.values()]})
    size = f"{len(train.queries)} Lyft / {len(val.queries)} Uber questions, {len(val.corpus)} Uber chunks searched, top {top_k}"
    save_results(
        out,
        "The walkthrough script: train on Lyft, evaluate on Uber",
        {"Uber questions": table, "Time": timing},
        notes=[size + ("" if max_chunks is None else f" (first {max_chunks} chunks of each set)")],
    )
    return {"table": table.to_dict(orient="records"), "seconds": seconds}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output-dir", default="reports", help="gets walkthrough/ (the script part), the executed notebooks and summary.md"
    )
    parser.add_argument("--embed", default="default", help="embedding spec (default: offline bge-small-en-v1.5)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the walkthrough recipe (as in LlamaIndex's walkthrough)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--max-chunks", type=int, default=None, help="only the first chunks of each question set, with their questions (a quick run)"
    )
    parser.add_argument(
        "--notebooks", nargs="*", default=None, help="notebooks to run after the script, by prefix (default: all; give none to skip them)"
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="papermill parameter for every notebook that has it (VALUE read as a Python literal)",
    )
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    script = NotebookRun("walkthrough script", out / SCRIPT_DIR / "results.json", out / SCRIPT_DIR)
    t0 = time.perf_counter()
    try:
        run(args.embed, args.epochs, args.top_k, str(script.output_dir), max_chunks=args.max_chunks)
    except Exception as exc:  # recorded in the summary; the notebooks still run
        script.error = f"{type(exc).__name__}: {exc}"
        print(f"[walkthrough] the script part FAILED: {script.error}", file=sys.stderr)
    script.seconds = time.perf_counter() - t0
    runs: List[NotebookRun] = [script]
    if args.notebooks is None or args.notebooks:
        notebooks = find_notebooks(only=args.notebooks or ())
        if not notebooks:
            parser.error(f"no notebook matches {args.notebooks}")
        params = {name: parse_value(value) for name, value in args.parameter}
        runs += run_notebooks(out, notebooks, params)
    command = "python -m adapterkit.notebook.walkthrough " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = write_summary(out, runs, command=command.strip())
    failed = [r.name for r in runs if not r.ok]
    print(
        f"[walkthrough] {len(runs)} parts in {sum(r.seconds for r in runs):.1f} s; summary: {summary}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
