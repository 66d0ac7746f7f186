"""Every option of ``EmbeddingAdapterFinetuneEngine`` in one place, with its default and why."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Type

import torch

from adapterkit.training.sampling import NEGATIVES


@dataclass
class FinetuneConfig:
    """Options of a fine-tuning run. Defaults were chosen on training data only (``benchmarks/README.md``).

    Options marked *data* shape what ``EmbeddingAdapterFinetuneEngine.__init__`` prepares (the
    held-out split, negatives, pseudo-queries); the others can also be changed per ``finetune()`` call.
    """

    batch_size: int = 32  # queries per step
    epochs: int = 16  # passes over the training pairs; the best one on held-out chunks is kept
    optimizer_class: Type[torch.optim.Optimizer] = torch.optim.AdamW  # any torch optimiser class
    optimizer_params: Dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})  # its keyword arguments
    scale: float = 30.0  # inverse temperature on cosine similarities in the loss
    identity_reg: float = 0.03  # weight of ||W - I||^2 (linear adapters) or mean ||f(q) - q||^2 (others)
    warmup_ratio: float = 0.1  # share of steps with a rising learning rate, then a linear decay
    max_grad_norm: float = 1.0  # gradient clipping
    shuffle: bool = True  # shuffle pairs each epoch (seeded)
    no_duplicates: bool = True  # keep two queries of one chunk out of a batch (one would be the other's negative)
    guard: bool = True  # an epoch must not be worse than the start on any held-out group (labelled chunks, target corpus),
    #                     and must gain on the labelled questions when they are about the target corpus
    refit: bool = True  # after choosing an epoch, train again on every pair (held-out chunks too) and keep that epoch
    seed: int = 0  # seeds the held-out split, pseudo-queries and batch order: same seed, same adapter
    checkpoint_save_steps: int = 100  # steps between checkpoints (with a model_checkpoint_path)
    num_threads: Optional[int] = 1  # torch CPU threads while training: tiny adapters train fastest on one
    verbose: bool = False  # print the loss (and held-out MRR) per epoch
    memory_weight: float = 0.25  # how far a corpus memory pulls a query toward the chunks it matches
    memory_temperature: float = 100.0  # sharpness of that match

    # data
    negatives: str = "corpus"  # "corpus": every chunk of the query's corpus; "in_batch": the batch's positives (LlamaIndex)
    hard_negatives: int = 0  # with "in_batch": mined hard negatives added per query
    val_fraction: float = 0.2  # share of training chunks held out to pick the epoch (0: keep the last epoch)
    pseudo_queries_per_chunk: int = 4  # label-free queries drawn from each chunk of an unlabeled corpus
    pseudo_query_words: Optional[Tuple[int, int]] = None  # None: whole sentences; (a, b): windows of a..b words
    corpus_memory: bool = True  # with an unlabeled corpus, save a CorpusMemory of its sentences beside the adapter
    question_memory: bool = True  # and one of the labelled questions whose relevant chunks are in that corpus
    question_memory_weights: Tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)  # its pull is chosen from these on held-out
    question_memory_temperatures: Tuple[float, ...] = (20.0, 50.0, 100.0)  # questions (weight 0: no such memory)

    def __post_init__(self) -> None:
        self.optimizer_params = dict(self.optimizer_params)
        self.check()

    def check(self) -> None:
        """Raise a ``ValueError`` that names the option and the range it takes."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        need(whole(self.batch_size) and self.batch_size >= 1, f"batch_size must be a whole number >= 1, got {self.batch_size!r}.")
        need(whole(self.epochs) and self.epochs >= 0, f"epochs must be a whole number >= 0, got {self.epochs!r}.")
        need(whole(self.checkpoint_save_steps) and self.checkpoint_save_steps >= 1,
             f"checkpoint_save_steps must be a whole number >= 1, got {self.checkpoint_save_steps!r}.")
        need(finite(self.scale) and self.scale > 0, f"scale must be a finite number > 0, got {self.scale!r}.")
        lr = self.optimizer_params.get("lr", 1e-3)
        need(finite(lr) and lr > 0, f"optimizer_params['lr'] must be a finite number > 0, got {lr!r}.")
        for name in ("identity_reg", "warmup_ratio", "max_grad_norm", "memory_weight", "memory_temperature"):
            value = getattr(self, name)
            need(finite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value!r}.")
        need(self.warmup_ratio <= 1, f"warmup_ratio must be at most 1, got {self.warmup_ratio!r}.")
        need(self.negatives in NEGATIVES, f"negatives must be one of {NEGATIVES}, got {self.negatives!r}.")
        need(whole(self.hard_negatives) and self.hard_negatives >= 0, f"hard_negatives must be >= 0, got {self.hard_negatives!r}.")
        need(finite(self.val_fraction) and 0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction!r}.")
        need(whole(self.pseudo_queries_per_chunk) and self.pseudo_queries_per_chunk >= 1,
             f"pseudo_queries_per_chunk must be >= 1, got {self.pseudo_queries_per_chunk!r}.")
        words = self.pseudo_query_words
        need(words is None or (len(words) == 2 and all(whole(w) for w in words) and 1 <= words[0] <= words[1]),
             f"pseudo_query_words must be None or (shortest, longest) with 1 <= shortest <= longest, got {words!r}.")
        need(all(finite(w) and w >= 0 for w in self.question_memory_weights) and all(finite(t) and t > 0 for t in self.question_memory_temperatures),
             "question_memory_weights must be finite numbers >= 0 and question_memory_temperatures finite numbers > 0.")
        need(isinstance(self.optimizer_class, type) and issubclass(self.optimizer_class, torch.optim.Optimizer),
             f"optimizer_class must be a torch.optim.Optimizer subclass, got {self.optimizer_class!r}.")

    def updated(self, **changes: Any) -> "FinetuneConfig":
        """A checked copy with ``changes``; an unknown name is a ``TypeError``."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"Unknown option(s) {unknown}; the options are the fields of FinetuneConfig.")
        if "optimizer_params" in changes:  # a dict without "lr" keeps the current learning rate
            changes["optimizer_params"] = {"lr": self.optimizer_params.get("lr"), **changes["optimizer_params"]}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-friendly values (the optimiser by name), for fingerprints and reports."""
        out = dataclasses.asdict(self)
        out["optimizer_class"] = f"{self.optimizer_class.__module__}.{self.optimizer_class.__qualname__}"
        return out


DATA_OPTIONS = frozenset({"negatives", "hard_negatives", "val_fraction", "pseudo_queries_per_chunk", "pseudo_query_words", "corpus_memory",
                          "question_memory", "question_memory_weights", "question_memory_temperatures"})
