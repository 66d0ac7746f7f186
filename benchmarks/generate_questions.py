"""Generate a Lyft train set with the offline model (SmolLM2-135M on the CPU) and print its speed.

The chunks are those of the published ``train_dataset.json`` (334 Lyft 10-K chunks), so the result can
be compared with the published GPT-3.5 questions. Resumable: run it again with the same ``--output``
and it goes on where it stopped (the rate then counts only the new chunks).

    pip install 'adapterkit[llm]'
    python benchmarks/generate_questions.py --limit 20 --threads 1
    python benchmarks/generate_questions.py --output reports/generated/train_dataset.json   # all chunks
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from adapterkit import EmbeddingQAFinetuneDataset
from adapterkit.data.files import get_file
from adapterkit.data.llms import resolve_llm
from adapterkit.data.questions import generate_qa_embedding_pairs

WORK = tempfile.TemporaryDirectory(prefix="adapterkit-bench-")  # engines' output folders, removed at exit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N chunks only (default: all 334)")
    parser.add_argument("--output", default="reports/generated/train_dataset.json", help="dataset JSON (progress beside it)")
    parser.add_argument("--llm", default="default", help="resolve_llm spec (default: offline SmolLM2-135M)")
    parser.add_argument("--questions", type=int, default=2, help="questions per chunk")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="for the local model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the local model (1 on a busy machine)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent calls (local models always use 1)")
    parser.add_argument("--evaluate", action="store_true", help="then train adapters (engine defaults) and score them on the Uber val set")
    args = parser.parse_args()

    published = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    chunks = dict(list(published.corpus.items())[: args.limit])
    start = time.perf_counter()
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_threads": args.threads} if args.llm in ("default", None) else {}
    llm = resolve_llm(args.llm, **kwargs)
    print(f"loaded {llm.metadata.model_name} in {time.perf_counter() - start:.1f} s")

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    ds = generate_qa_embedding_pairs(
        chunks, llm=llm, num_questions_per_chunk=args.questions, output_path=args.output, max_workers=args.workers
    )
    stats = ds.stats
    print(
        f"\n{stats.generated} chunks generated in {stats.seconds:.1f} s: {stats.seconds_per_chunk:.2f} s/chunk, "
        f"{stats.questions_per_second:.3f} questions/s, "
        f"{stats.new_questions / max(stats.generated, 1):.2f} usable questions/chunk"
    )
    print(f"dataset: {args.output} ({len(ds.queries)} questions over {len(ds.corpus)} chunks)")
    for qid in list(ds.queries)[:8]:
        print(f"  - {ds.queries[qid]}")
    if args.evaluate:
        compare(published, ds, chunks)


def compare(published: EmbeddingQAFinetuneDataset, generated: EmbeddingQAFinetuneDataset, chunks: dict) -> None:
    """Base vs an adapter on the published questions vs one on the generated questions, same chunks."""
    from adapterkit import (
        EmbeddingAdapterFinetuneEngine,
        display_results,
        evaluate,
        resolve_embed_model,
    )

    model = resolve_embed_model("default")
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    keep = set(chunks)
    same_chunks = EmbeddingQAFinetuneDataset(
        queries={q: t for q, t in published.queries.items() if published.relevant_docs[q][0] in keep},
        corpus={d: t for d, t in published.corpus.items() if d in keep},
        relevant_docs={q: d for q, d in published.relevant_docs.items() if d[0] in keep},
    )
    generated = EmbeddingQAFinetuneDataset(queries=generated.queries, corpus=generated.corpus, relevant_docs=generated.relevant_docs)
    names, results = ["base"], [evaluate(val, model)]
    for name, train in (("adapter on published GPT-3.5 questions", same_chunks), ("adapter on SmolLM2-generated questions", generated)):
        engine = EmbeddingAdapterFinetuneEngine(train, model, model_output_path=f"{WORK.name}/{len(names)}", show_progress=False)
        engine.finetune()
        names.append(f"{name} ({len(train.queries)} q, {len(train.corpus)} chunks)")
        results.append(evaluate(val, engine.get_finetuned_model()))
    display_results(names, results)


if __name__ == "__main__":
    main()
