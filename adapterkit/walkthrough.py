"""The LlamaIndex adapter walkthrough, end to end, on the offline default.

Base model vs linear adapters trained on the Lyft 10-K questions (the walkthrough's recipe,
adapterkit's defaults, and those defaults with the Uber chunks as an unlabelled target corpus),
evaluated on the Uber 10-K questions; each adapter is saved, reloaded and
checked to score the same, and loaded in LlamaIndex's ``AdapterEmbeddingModel``. Run::

    python -m adapterkit.walkthrough --epochs 4 --output-dir reports/walkthrough
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset
from adapterkit import display_results, evaluate, resolve_embed_model
from adapterkit.adapter_embedding import apply_adapter
from adapterkit.cache import embed_texts
from adapterkit.data import get_file
from adapterkit.trainer import LLAMAINDEX_RECIPE


def run(embed: str = "default", epochs: int = 4, top_k: int = 5, output_dir: str = "reports/walkthrough", **engine_kwargs: Any) -> Dict[str, Any]:
    """Train and evaluate as the walkthrough does; return the results table as a dict."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    val = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json"))
    base_model = resolve_embed_model(embed)

    t0 = time.perf_counter()
    base = evaluate(val, base_model, top_k=top_k, verbose=True)
    t_base = time.perf_counter() - t0

    names, results, seconds = ["bge-small-en-v1.5 (base)"], [base], {"base_eval_incl_embedding": round(t_base, 2)}
    recipes = {
        "walkthrough recipe": {"epochs": epochs, **LLAMAINDEX_RECIPE},
        "adapterkit defaults": {},
        # Adapt to the corpus being searched: label-free pseudo-queries from the Uber chunks (never its questions).
        "adapterkit defaults + Uber chunks unlabelled": {"unlabeled_corpus": val.corpus},
    }
    for name, recipe in recipes.items():
        folder = out / name.replace(" + ", "_").replace(" ", "_")
        t0 = time.perf_counter()
        engine = EmbeddingAdapterFinetuneEngine(train, base_model, **{**recipe, **engine_kwargs, "model_output_path": folder})
        engine.finetune()
        seconds[f"{name}: engine incl. embedding and training"] = round(time.perf_counter() - t0, 2)
        reloaded = AdapterEmbeddingModel(base_model, folder)
        tuned = evaluate(val, reloaded, top_k=top_k)
        questions = list(val.queries.values())
        trained = apply_adapter(engine.model, embed_texts(base_model, questions, "query", show_progress=False), list(engine.memories.values()))
        if not np.allclose(trained, reloaded.embed(questions, "query"), atol=1e-6):
            raise RuntimeError(f"The adapter reloaded from {folder} maps queries differently from the trained one.")
        from llama_index.embeddings.adapter import AdapterEmbeddingModel as LlamaIndexAdapterModel

        LlamaIndexAdapterModel(base_model, str(folder), device="cpu")  # LlamaIndex's own class loads the folder
        print(f"Saved {name} adapter to {folder}; reloaded: the same query vectors; LlamaIndex's class loads it.")
        kind = "linear adapter + corpus memory" if engine.memories else "linear adapter"
        names.append(f"{kind}, {name} ({engine.config.epochs} epochs)")
        results.append(tuned)

    table = display_results(names, results, show=True)
    summary = {
        "table": table.to_dict(orient="records"),
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed", default="default", help="embedding spec (default: offline bge-small-en-v1.5)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the walkthrough recipe (as in LlamaIndex's walkthrough)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output-dir", default="reports/walkthrough")
    args = parser.parse_args()
    run(args.embed, args.epochs, args.top_k, args.output_dir)


if __name__ == "__main__":
    main()
