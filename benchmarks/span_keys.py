"""Memory keys without extra model calls: sentence spans pooled from the chunk's own pass, against sentence keys.

The corpus memory's keys are the chunk's sentences (6+ words), each embedded by its own base-model call
(as a query). The chunk's pass already computes a state per token, so a key could cost no call at all:
the mean of the token states of the sentence's span, L2-normalised ("span keys"). Sentences past the
model's 512-token window have no span and no key.

Measured on three public target sides, memory alone (base queries, no training, so only the keys
differ): Uber 2021 (LlamaIndex's published val questions), Lyft 2021 (its published train questions)
and SciFact (test claims over the 5,183 abstracts). Each key kind is scored with the defaults' pull
(``FinetuneConfig``'s ``memory_weight`` and ``memory_temperature``) and with the best pull of a small
grid chosen on the test questions themselves (an upper bound for both kinds). Reported: nDCG@10 and
MRR@5 against base with a paired bootstrap 95% interval, keys, and the base-model calls the keys need.
Run::

    python benchmarks/span_keys.py --output benchmarks/results/span_keys
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from adapterkit import CorpusMemory, EmbeddingQAFinetuneDataset, embed_texts
from adapterkit.data.documents import chunk_sentences
from adapterkit.data.qa_sets import load_qa_datasets
from adapterkit.embeddings import OnnxBGEEmbedding
from adapterkit.evaluation.runner import provenance
from adapterkit.metrics import exact_search, metrics_at_k, paired_bootstrap, unit_rows
from adapterkit.training.config import FinetuneConfig

GRID = list(itertools.product((0.1, 0.25, 0.5, 1.0), (20.0, 50.0, 100.0)))  # (weight, temperature)


def targets() -> Dict[str, EmbeddingQAFinetuneDataset]:
    lyft, uber = load_qa_datasets("published")
    return {"uber": uber, "lyft": lyft, "scifact": load_qa_datasets("scifact")[1]}


def span_keys(model: OnnxBGEEmbedding, corpus: Dict[str, str]) -> Tuple[np.ndarray, List[str], int]:
    """One pass per chunk; per sentence of ``chunk_sentences``, the mean state of its tokens (unit length)."""
    keys, owners, lost = [], [], 0
    for chunk_id, text in corpus.items():
        flat = " ".join(text.split())  # the text chunk_sentences splits
        enc = model._tokenizer.encode(flat)
        ids = np.array([enc.ids], dtype=np.int64)
        states = model._session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0][
            0
        ]
        starts = np.array([s for s, e in enc.offsets])
        ends = np.array([e for s, e in enc.offsets])
        special = np.array([s == e for s, e in enc.offsets])  # [CLS], [SEP]
        cursor = 0
        for sentence in chunk_sentences(text):
            begin = flat.find(sentence, cursor)
            if begin < 0:
                lost += 1
                continue
            cursor = begin + len(sentence)
            inside = (~special) & (starts >= begin) & (ends <= cursor)
            if not inside.any():  # past the 512-token window
                lost += 1
                continue
            keys.append(states[inside].mean(0))
            owners.append(chunk_id)
    return unit_rows(np.array(keys, dtype=np.float32)), owners, lost


def scores(dataset: EmbeddingQAFinetuneDataset, queries: torch.Tensor, docs: np.ndarray, ids: List[str]) -> Dict[str, np.ndarray]:
    row = {c: i for i, c in enumerate(ids)}
    qids = list(dataset.queries)
    relevant = [[row[c] for c in dataset.relevant_docs[q] if c in row] for q in qids]
    _, _, ranks = exact_search(queries.numpy(), docs, 10, relevant)
    m10, m5 = metrics_at_k(ranks, 10), metrics_at_k(ranks, 5)
    return {"ndcg@10": m10["ndcg"], "mrr@5": m5["mrr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["uber", "lyft", "scifact"])
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    config = FinetuneConfig()
    model = OnnxBGEEmbedding()
    results = []
    for name, dataset in targets().items():
        if name not in args.targets:
            continue
        ids = list(dataset.corpus)
        docs = embed_texts(model, [dataset.corpus[c] for c in ids], "text", show_progress=True, purpose=f"{name} chunks")
        queries = torch.as_tensor(
            embed_texts(model, list(dataset.queries.values()), "query", show_progress=True, purpose=f"{name} questions")
        )
        vectors = dict(zip(ids, docs))
        start = time.perf_counter()
        sentence = CorpusMemory.from_corpus(dataset.corpus, model, doc_vectors=docs, show_progress=True)
        sentence_seconds = time.perf_counter() - start
        calls = len({s for text in dataset.corpus.values() for s in chunk_sentences(text)})
        start = time.perf_counter()
        keys, owners, lost = span_keys(model, dataset.corpus)
        span_seconds = time.perf_counter() - start
        span = CorpusMemory.from_pairs(keys, owners, vectors)
        base = scores(dataset, queries, docs, ids)
        kinds = {
            "sentence keys (a call per distinct sentence)": (sentence, calls, sentence_seconds, len(sentence.keys)),
            "span keys (no call beyond the chunk's own)": (span, 0, span_seconds, len(keys)),
        }
        for kind, (memory, kind_calls, seconds, count) in kinds.items():
            tried = {(w, t): scores(dataset, memory.with_pull(w, t).apply(queries, queries), docs, ids) for w, t in GRID}
            best = max(tried, key=lambda pull: tried[pull]["ndcg@10"].mean())
            default = (config.memory_weight, config.memory_temperature)
            if default not in tried:
                tried[default] = scores(dataset, memory.with_pull(*default).apply(queries, queries), docs, ids)
            for label, (weight, temperature) in (("defaults' pull", default), ("best pull on these questions", best)):
                got = tried[(weight, temperature)]
                row = {
                    "target": name,
                    "keys": kind,
                    "pull": label,
                    "weight": weight,
                    "temperature": temperature,
                    "key_count": count,
                    "base_model_calls_for_keys": kind_calls,
                    "key_seconds": round(seconds, 1),  # sentence keys: read from a warm cache; span keys: one pass per chunk
                    "base_ndcg@10": round(float(base["ndcg@10"].mean()), 4),
                }
                for metric in ("ndcg@10", "mrr@5"):
                    diff, low, high = paired_bootstrap(base[metric], got[metric])
                    row[metric] = round(float(got[metric].mean()), 4)
                    row[f"Δ{metric}"] = [round(diff, 4), round(low, 4), round(high, 4)]
                if kind.startswith("span"):
                    row["sentences_without_a_span"] = lost
                results.append(row)
                print(row, flush=True)
    command = "python benchmarks/span_keys.py --output benchmarks/results/span_keys"
    if args.output:
        Path(args.output + ".json").write_text(
            json.dumps({"command": command, "provenance": provenance(), "rows": results}, indent=2) + "\n"
        )
        lines = [
            "# Memory keys: sentence calls against spans of the chunk's pass",
            "",
            f"`{command}`",
            "",
            "| target | keys | pull (weight, temperature) | keys | base-model calls | nDCG@10 | ΔnDCG@10 [95%] | ΔMRR@5 [95%] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            d, m = r["Δndcg@10"], r["Δmrr@5"]
            lines.append(
                f"| {r['target']} | {r['keys']} | {r['pull']} ({r['weight']}, {r['temperature']}) | {r['key_count']} | "
                f"{r['base_model_calls_for_keys']} | {r['ndcg@10']:.4f} (base {r['base_ndcg@10']:.4f}) | "
                f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] | {m[0]:+.4f} [{m[1]:+.4f}, {m[2]:+.4f}] |"
            )
        Path(args.output + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
