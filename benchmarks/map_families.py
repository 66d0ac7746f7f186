"""How far a linear query map can go: Procrustes against ridge least squares, on three sets of paired text.

For each benchmark and direction of ``cross_model.py`` (MiniLM and bge-small), the map from NEW query
vectors into OLD's space is fitted three ways, and NEW's test queries, mapped, are ranked among OLD's
chunk vectors (MRR@5, and its share of NEW re-embedding every chunk):

- the run's own texts: the training questions and the searched corpus's sentences (which a refined run
  embeds with NEW anyway, for its sentence memory), plus 10% of the chunks;
- the same plus generic text (``cross_model.generic_sentences``: another domain's sentences);
- a ceiling no real run has: the test questions themselves and every chunk.

Each set is fitted by ``fit_linear_map`` as Procrustes (orthogonal) and as ridge least squares at two
penalties. Run::

    python benchmarks/map_families.py --output benchmarks/results/map_families
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from cross_model import MODELS, generic_sentences, scores, setting  # this folder is on the path of a script run from it

from adapterkit.cache import embed_texts
from adapterkit.cross_model import choose_sample, fit_linear_map
from adapterkit.data.documents import chunk_sentences
from adapterkit.evaluation.runner import provenance
from adapterkit.metrics import unit_rows
from adapterkit.query_vectors import adapt_queries

FITS = [("procrustes", 1e-3), ("lstsq", 1e-3), ("lstsq", 1e-2)]  # (method, ridge; Procrustes has none)


def run(name: str, old_spec: str, new_spec: str) -> List[Dict]:
    b = setting(name, old_spec, new_spec)  # the same data and vectors as cross_model's
    train, test, old, new, ids, position, relevant = b.train, b.test, b.old, b.new, b.ids, b.position, b.relevant
    docs_old, docs_new, q_old, q_new = b.docs_old, b.docs_new, b.q_old, b.q_new
    own = list(dict.fromkeys(list(train.queries.values()) + [s for t in test.corpus.values() for s in chunk_sentences(t)]))
    o_new, o_old = embed_texts(new, own, "query"), embed_texts(old, own, "query")
    generic = generic_sentences(name)
    g_new, g_old = embed_texts(new, generic, "query"), embed_texts(old, generic, "query")
    rows_of = [position[d] for d in choose_sample(ids, 0.1, 0)]
    sets = {
        f"own texts ({len(own)}) + 10% of the chunks": ([o_new, docs_new[rows_of]], [o_old, docs_old[rows_of]]),
        f"generic ({len(generic)}) + own texts + 10% of the chunks": ([g_new, o_new, docs_new[rows_of]], [g_old, o_old, docs_old[rows_of]]),
        "ceiling: the test questions and every chunk": ([q_new, docs_new], [q_old, docs_old]),
    }
    full = scores(q_new, unit_rows(docs_new), relevant)["mrr@5"]
    rows = []
    for label, (x, y) in sets.items():
        for method, ridge in FITS:
            layer = fit_linear_map(np.concatenate(x), np.concatenate(y), method=method, ridge=ridge)
            got = scores(adapt_queries(layer, q_new, out_dim=docs_old.shape[1]), docs_old, relevant)
            rows.append(
                {
                    "benchmark": name,
                    "old": MODELS[old_spec],
                    "new": MODELS[new_spec],
                    "pairs": label,
                    "fit": method if method == "procrustes" else f"lstsq, ridge {ridge:g}",
                    **got,
                    "recovered": round(got["mrr@5"] / full, 4),
                    "new_everywhere_mrr@5": full,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args()
    rows: List[Dict] = []
    for name in ("uber", "scifact"):
        for old, new in [("minilm", "default"), ("default", "minilm")]:
            rows += run(name, old, new)
    lines = ["| benchmark | OLD index | NEW queries | pairs | fit | MRR@5 | share of re-embedding's |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['benchmark']} | {r['old']} | {r['new']} | {r['pairs']} | {r['fit']} | {r['mrr@5']:.4f} | {r['recovered']:.1%} |"
        for r in rows
    ]
    print("\n".join(lines))
    if args.output:
        Path(f"{args.output}.json").write_text(json.dumps({"provenance": provenance(), "rows": rows}, indent=2))
        Path(f"{args.output}.md").write_text(
            f"# How far a linear query map can go\n\n`python benchmarks/map_families.py --output {args.output}`\n\n"
            + "\n".join(lines)
            + "\n"
        )


if __name__ == "__main__":
    main()
