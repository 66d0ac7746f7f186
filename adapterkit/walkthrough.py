"""The LlamaIndex adapter walkthrough, end to end, on the offline default.

Base model vs a linear adapter trained on the Lyft 10-K questions, evaluated on the Uber 10-K
questions; the adapter is saved, reloaded and checked to score the same. Run::

    python -m adapterkit.walkthrough --epochs 4 --output-dir reports/walkthrough
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict

from adapterkit import AdapterEmbeddingModel, EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset
from adapterkit import display_results, evaluate, resolve_embed_model
from adapterkit.data import get_file


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

    t0 = time.perf_counter()
    engine = EmbeddingAdapterFinetuneEngine(train, base_model, epochs=epochs, model_output_path=out / "linear_adapter", **engine_kwargs)
    engine.finetune()
    t_train = time.perf_counter() - t0

    tuned = evaluate(val, engine.get_finetuned_model(), top_k=top_k)
    reloaded = evaluate(val, AdapterEmbeddingModel(base_model, out / "linear_adapter"), top_k=top_k)
    if not reloaded["mrr"].equals(tuned["mrr"]):
        raise RuntimeError("The reloaded adapter scores differently from the trained one.")
    from llama_index.embeddings.adapter import AdapterEmbeddingModel as LlamaIndexAdapterModel

    LlamaIndexAdapterModel(base_model, str(out / "linear_adapter"), device="cpu")  # loads in LlamaIndex too

    table = display_results(["bge-small-en-v1.5 (base)", f"linear adapter ({epochs} epochs)"], [base, tuned], show=True)
    summary = {
        "table": table.to_dict(orient="records"),
        "seconds": {"base_eval_incl_embedding": round(t_base, 2), "engine_incl_embedding_and_training": round(t_train, 2)},
        "adapter": str(out / "linear_adapter"),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"Saved adapter to {out / 'linear_adapter'}; reload gives identical scores; LlamaIndex loads it.")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed", default="default", help="embedding spec (default: offline bge-small-en-v1.5)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output-dir", default="reports/walkthrough")
    args = parser.parse_args()
    run(args.embed, args.epochs, args.top_k, args.output_dir)


if __name__ == "__main__":
    main()
