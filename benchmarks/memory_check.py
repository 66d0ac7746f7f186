"""Would a held-out check of the corpus memory help? Measured on Lyft splits only; the answer was no.

The target corpus has no labels to test its memory on. The check tried here builds the same kind of
memory over the *held-out labelled* chunks (their sentences) after epoch selection, and leaves the
memory out when it lowers those chunks' held-out MRR@10 by more than a standard error. Protocol of
``select_on_lyft_halves.py`` (A labelled, B searched, three thirds and three random halves), then
the full Lyft training set with the Uber chunks as target corpus (the check reads Lyft questions
only; the Uber questions are not read).

    python benchmarks/memory_check.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from adapterkit import AdapterEmbeddingModel, CorpusMemory, EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset, evaluate, resolve_embed_model
from adapterkit.adapters import INNER_DIR
from adapterkit.data import get_file

sys.path.insert(0, str(Path(__file__).parent))
from select_on_lyft_halves import halves  # noqa: E402


class CheckedEngine(EmbeddingAdapterFinetuneEngine):
    """Runs the check between epoch selection and the refit, and drops the memory when it fails."""

    def _fit(self, validate, keep_epoch=None):
        saved = super()._fit(validate, keep_epoch)
        if validate and self._memory is not None:  # the selection run: labelled chunks are still held out
            group = self.groups[0]
            chunks = np.unique(group.positives[group.val_idx])
            texts = list(self.dataset.corpus.values())
            memory = CorpusMemory(self.model, *self._memory_vectors({str(c): texts[c] for c in chunks}, group.docs[chunks]),
                                  weight=self.memory_weight, temperature=self.memory_temperature)
            gain = self.validation_rr(adapter=memory, groups=[group]) - self.validation_rr(groups=[group])
            self.check = (float(gain.mean()), float(gain.std(ddof=1) / math.sqrt(len(gain))))
            self.kept = self.check[0] >= -self.check[1]
        return saved


def main() -> None:
    train = EmbeddingQAFinetuneDataset.from_json(get_file("train_dataset.json"))
    model = resolve_embed_model("default")
    rows = []
    runs = [(f"{split} {seed}", *halves(train, seed, split), seed) for split in ("blocks", "random") for seed in range(3)]
    for name, a, b, seed in runs:
        engine = CheckedEngine(a, model, unlabeled_corpus=b.corpus, seed=seed, model_output_path="/tmp/adapterkit-check", show_progress=False)
        engine.finetune()
        with_memory = evaluate(b, engine.get_finetuned_model(), top_k=5)["mrr"].mean()
        alone = AdapterEmbeddingModel(model, Path("/tmp/adapterkit-check") / INNER_DIR)  # the trained adapter without its memory
        checked = with_memory if engine.kept else evaluate(b, alone, top_k=5)["mrr"].mean()
        rows.append((name, engine.check, engine.kept, with_memory, checked))
        print(f"{name}: held-out gain {engine.check[0]:+.4f} (SE {engine.check[1]:.4f}), memory kept: {engine.kept}; "
              f"B MRR@5 always with memory {with_memory:.4f}, with the check {checked:.4f}", flush=True)
    for blocks in (True, False):
        part = [r for r in rows if r[0].startswith("blocks") == blocks]
        print(f"{'blocks' if blocks else 'random'}: always {np.mean([r[3] for r in part]):.4f}, checked {np.mean([r[4] for r in part]):.4f}")
    uber = EmbeddingQAFinetuneDataset.from_json(get_file("val_dataset.json")).corpus  # chunks only
    for seed in range(3):
        engine = CheckedEngine(train, model, unlabeled_corpus=uber, seed=seed, model_output_path="/tmp/adapterkit-check", show_progress=False)
        engine.finetune()
        print(f"full Lyft + Uber chunks, seed {seed}: held-out gain {engine.check[0]:+.4f} (SE {engine.check[1]:.4f}), memory kept: {engine.kept}")


if __name__ == "__main__":
    main()
