"""Every option of ``EmbeddingAdapterFinetuneEngine`` in one place, with its default and why."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Dict, Optional, Tuple, Type, Union

import torch

from adapterkit.cross_model import sample_count
from adapterkit.errors import AdapterkitError
from adapterkit.memory.keys import MAX_PULL, pull_ok
from adapterkit.training.losses import MultipleNegativesRankingLoss
from adapterkit.training.sampling import NEGATIVES


class OptionError(AdapterkitError, ValueError):
    """An option out of its range, or one that could not take effect with the others or with what the run is given."""


class OptionNameError(OptionError, TypeError):
    """An option name that does not exist, or one a call cannot change."""


def option(
    default: Any = dataclasses.MISSING, *, fixed: bool = False, run: bool = True, user: bool = False, factory: Any = dataclasses.MISSING
) -> Any:
    """A ``FinetuneConfig`` field and how it may be set.

    Args:
        default, factory: its default value (``factory`` for mutable ones).
        user: one of the few options users set; the others are advanced (their defaults were measured).
        fixed: it shapes the data ``EmbeddingAdapterFinetuneEngine.__init__`` prepares (the held-out
            split, negatives, pseudo-queries, memories), so ``finetune()`` cannot change it.
        run: it changes the trained weights, so a checkpoint made under another value is not resumed.
    """
    return field(default=default, default_factory=factory, metadata={"fixed": fixed, "run": run, "user": user})


@dataclass
class FinetuneConfig:
    """Options of a fine-tuning run. Defaults were chosen on training data only (``benchmarks/README.md``).

    This class is the one registry of options: each field says (``option``) whether it is fixed at
    construction (the options under "data" shape what ``EmbeddingAdapterFinetuneEngine.__init__``
    prepares) or may change per ``finetune()`` call, and whether it changes the trained weights (and
    so which checkpoints a run may resume). ``FIXED_AT_CONSTRUCTION`` and ``RUN_OPTIONS`` are read off it.
    A value that cannot take effect with the others is an error (``check``), never ignored.
    """

    batch_size: int = option(32, user=True)  # queries per step
    epochs: int = option(16, user=True)  # passes over the training pairs; the best one on held-out chunks is kept
    optimizer_class: Type[torch.optim.Optimizer] = option(torch.optim.AdamW)  # any torch optimiser class
    optimizer_params: Dict[str, Any] = option(
        factory=lambda: {"lr": 1e-3}, user=True
    )  # the optimiser's keyword arguments ("lr": its learning rate)
    loss_class: Type[torch.nn.Module] = option(MultipleNegativesRankingLoss)  # built as loss_class(adapter, scale=scale)
    scale: float = option(30.0)  # inverse temperature on cosine similarities in the loss
    identity_reg: float = option(0.03)  # weight of ||W - I||^2 (linear adapters) or mean ||f(q) - q||^2 (others)
    warmup_ratio: float = option(0.1)  # share of steps with a rising learning rate, then a linear decay
    max_grad_norm: float = option(1.0)  # gradient clipping
    shuffle: bool = option(True)  # shuffle pairs each epoch (seeded)
    no_duplicates: bool = option(True)  # keep two queries of one chunk out of a batch (one would be the other's negative)
    guard: bool = option(True)  # an epoch must not be clearly worse than the start on any held-out group (labelled chunks, target corpus)
    refit: bool = option(True)  # after choosing an epoch, train again on every pair (held-out chunks too) and keep that epoch
    seed: int = option(0, user=True)  # seeds the held-out split, pseudo-queries and batch order: same seed, same adapter
    checkpoint_save_steps: int = option(100, run=False)  # steps between checkpoints (with a model_checkpoint_path)
    num_threads: Optional[int] = option(1, run=False)  # torch CPU threads while training: tiny adapters train fastest on one
    verbose: bool = option(False, run=False, user=True)  # print the loss (and held-out MRR) per epoch

    # data
    negatives: str = option(
        "corpus", fixed=True
    )  # "corpus": every chunk of the query's corpus; "in_batch": the batch's positives (LlamaIndex)
    hard_negatives: int = option(0, fixed=True)  # with "in_batch": mined hard negatives added per query
    val_fraction: float = option(0.2, fixed=True)  # share of training chunks held out to pick the epoch (0: keep the last epoch)
    pseudo_queries_per_chunk: int = option(4, fixed=True)  # label-free queries drawn from each chunk of an unlabeled corpus
    pseudo_query_words: Optional[Tuple[int, int]] = option(None, fixed=True)  # None: whole sentences; (a, b): windows of a..b words
    map_sample: Union[int, float] = option(
        0.1, fixed=True
    )  # with an index_model: chunks of the searched corpus both models embed for the start map (a count or a share)
    corpus_memory: bool = option(
        True, fixed=True, run=False, user=True
    )  # with an unlabeled corpus, save a CorpusMemory of its sentences beside the adapter
    memory_weight: float = option(
        0.25, fixed=True, run=False, user=True
    )  # how far the sentence memory pulls a query toward the chunks it matches
    memory_temperature: float = option(100.0, fixed=True, run=False)  # sharpness of the sentence memory's match
    memory_keys_per_chunk: Optional[int] = option(
        None, fixed=True, run=False, user=True
    )  # at most this many of a chunk's sentences as its keys (None: all)
    question_memory: bool = option(
        True, fixed=True, run=False, user=True
    )  # with labelled questions about the searched corpus, a memory of them too, where held-out questions show it helps
    question_memory_weights: Tuple[float, ...] = option(
        (0.0, 0.1, 0.25, 0.5, 1.0), fixed=True, run=False
    )  # the question memory's pulls tried on held-out questions (0: no such memory)
    question_memory_temperatures: Tuple[float, ...] = option((20.0, 50.0, 100.0), fixed=True, run=False)  # its sharpnesses tried with them

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer_params, dict):
            raise OptionError(f"optimizer_params must be a dict of keyword arguments, got {self.optimizer_params!r}.")
        self.optimizer_params = dict(self.optimizer_params)
        self.check()

    def check(self) -> None:
        """Raise an ``OptionError`` that names the option and the range it takes."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise OptionError(message)

        whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        need(
            whole(self.batch_size) and 1 <= self.batch_size <= 10**6,
            f"batch_size must be a whole number in [1, 10**6], got {self.batch_size!r}.",
        )
        need(whole(self.epochs) and 0 <= self.epochs <= 10**4, f"epochs must be a whole number in [0, 10**4], got {self.epochs!r}.")
        need(whole(self.seed) and 0 <= self.seed < 2**32, f"seed must be a whole number in [0, 2**32), got {self.seed!r}.")
        for name in ("shuffle", "no_duplicates", "guard", "refit", "verbose", "corpus_memory", "question_memory"):
            need(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}.")
        need(
            whole(self.checkpoint_save_steps) and self.checkpoint_save_steps >= 1,
            f"checkpoint_save_steps must be a whole number >= 1, got {self.checkpoint_save_steps!r}.",
        )
        need(finite(self.scale) and self.scale > 0, f"scale must be a finite number > 0, got {self.scale!r}.")
        lr = self.optimizer_params.get("lr", 1e-3)
        need(finite(lr) and lr > 0, f"optimizer_params['lr'] must be a finite number > 0, got {lr!r}.")
        for name in ("identity_reg", "warmup_ratio"):
            value = getattr(self, name)
            need(finite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value!r}.")
        need(  # 0 would clip every gradient to nothing
            finite(self.max_grad_norm) and self.max_grad_norm > 0, f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}."
        )
        need(pull_ok(self.memory_weight, 1.0), f"memory_weight must be a number in [0, {MAX_PULL:g}], got {self.memory_weight!r}.")
        need(
            pull_ok(0.0, self.memory_temperature),
            f"memory_temperature must be a number in (0, {MAX_PULL:g}], got {self.memory_temperature!r}.",
        )
        need(self.warmup_ratio <= 1, f"warmup_ratio must be at most 1, got {self.warmup_ratio!r}.")
        need(self.negatives in NEGATIVES, f"negatives must be one of {NEGATIVES}, got {self.negatives!r}.")
        need(
            whole(self.hard_negatives) and 0 <= self.hard_negatives <= 10**4,
            f"hard_negatives must be in [0, 10**4], got {self.hard_negatives!r}.",
        )
        need(finite(self.val_fraction) and 0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction!r}.")
        need(
            self.memory_keys_per_chunk is None or (whole(self.memory_keys_per_chunk) and self.memory_keys_per_chunk >= 1),
            f"memory_keys_per_chunk must be None (every sentence) or a whole number >= 1, got {self.memory_keys_per_chunk!r}.",
        )
        need(
            self.corpus_memory or self.memory_keys_per_chunk is None,
            "memory_keys_per_chunk caps the corpus memory's keys, and corpus_memory=False builds none: drop one of them.",
        )
        need(
            whole(self.pseudo_queries_per_chunk) and 1 <= self.pseudo_queries_per_chunk <= 1000,
            f"pseudo_queries_per_chunk must be in [1, 1000], got {self.pseudo_queries_per_chunk!r}.",
        )
        words = self.pseudo_query_words
        need(
            words is None
            or (isinstance(words, (tuple, list)) and len(words) == 2 and all(whole(w) for w in words) and 1 <= words[0] <= words[1]),
            f"pseudo_query_words must be None or (shortest, longest) with 1 <= shortest <= longest, got {words!r}.",
        )
        grid = (self.question_memory_weights, self.question_memory_temperatures)
        need(
            all(isinstance(g, (tuple, list)) and len(g) >= 1 for g in grid)
            and all(pull_ok(w, t) for w in self.question_memory_weights for t in self.question_memory_temperatures),
            f"question_memory_weights must be a non-empty list of numbers in [0, {MAX_PULL:g}] and question_memory_temperatures "
            f"one in (0, {MAX_PULL:g}] (question_memory=False turns that memory off).",
        )
        need(
            isinstance(self.optimizer_class, type) and issubclass(self.optimizer_class, torch.optim.Optimizer),
            f"optimizer_class must be a torch.optim.Optimizer subclass, got {self.optimizer_class!r}.",
        )
        need(
            isinstance(self.optimizer_params, dict) and all(isinstance(k, str) for k in self.optimizer_params),
            f"optimizer_params must be a dict of keyword arguments, got {self.optimizer_params!r}.",
        )
        try:  # the optimiser's own checks on a throwaway parameter (and two steps of torch's own): a bad value fails here
            weight = torch.nn.Parameter(torch.zeros(1))
            optimizer = self.optimizer_class([weight], **self.optimizer_params)
            if self.optimizer_class.__module__.startswith("torch."):  # a user's class may count or log its steps
                for _ in range(2):  # momentum-like state first acts on the second step
                    weight.grad = torch.ones(1)
                    optimizer.step()
                if not torch.isfinite(weight).all():
                    raise ValueError("two steps make the weights non-finite")
                if float(weight.detach()) == 0.0:
                    raise ValueError("two steps leave the weights where they were (a zero or infinite step size)")
        except Exception as exc:  # torch raises KeyError, AssertionError and others for values it does not take
            raise OptionError(f"optimizer_params {self.optimizer_params!r} do not fit {self.optimizer_class.__name__}: {exc}.") from None
        need(
            isinstance(self.loss_class, type) and issubclass(self.loss_class, torch.nn.Module),
            f"loss_class must be a torch.nn.Module subclass taking (adapter, scale=...), got {self.loss_class!r}.",
        )
        need(
            self.num_threads is None or (whole(self.num_threads) and 1 <= self.num_threads <= 1024),
            f"num_threads must be None (torch's own setting) or a whole number in [1, 1024], got {self.num_threads!r}.",
        )
        # Options that could not take effect together with the others.
        try:
            sample_count(self.map_sample, 1)  # raises with the range it takes
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        need(
            not self.hard_negatives or self.negatives == "in_batch",
            f"hard_negatives={self.hard_negatives} adds mined negatives to in-batch negatives; with negatives="
            f"{self.negatives!r} every chunk is already a negative. Pass negatives='in_batch' or hard_negatives=0.",
        )
        need(
            self.val_fraction > 0 or not (self.guard or self.refit),
            "val_fraction=0 holds nothing out, so no epoch is chosen (the last one is kept), the guard has nothing to "
            "check and there is nothing to refit: pass guard=False and refit=False with it, or a val_fraction > 0.",
        )

    def updated(self, **changes: Any) -> "FinetuneConfig":
        """A checked copy with ``changes``; an unknown name is an ``OptionNameError`` (a ``TypeError`` too)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise OptionNameError(f"Unknown option(s) {unknown}; the options are the fields of FinetuneConfig.")
        if "optimizer_params" in changes:  # a dict without "lr" keeps the current learning rate
            if not isinstance(changes["optimizer_params"], dict):
                raise OptionError(f"optimizer_params must be a dict of keyword arguments, got {changes['optimizer_params']!r}.")
            changes["optimizer_params"] = {"lr": self.optimizer_params.get("lr"), **changes["optimizer_params"]}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-friendly values (the optimiser by name), for fingerprints and reports."""
        out = dataclasses.asdict(self)
        for name in ("optimizer_class", "loss_class"):
            cls = getattr(self, name)
            out[name] = f"{cls.__module__}.{cls.__qualname__}"
        return out


def _names(**metadata: bool) -> frozenset:
    return frozenset(f.name for f in dataclasses.fields(FinetuneConfig) if all(f.metadata[k] == v for k, v in metadata.items()))


FIXED_AT_CONSTRUCTION = _names(fixed=True)  # finetune() refuses to change these
RUN_OPTIONS = _names(run=True)  # a checkpoint made under other values of these is not resumed
USER_OPTIONS = _names(user=True)  # the few options users set; the rest are advanced


# Options that act on the searched corpus (``unlabeled_corpus``): set without one, they could not take effect.
CORPUS_OPTIONS = (
    "pseudo_queries_per_chunk",
    "pseudo_query_words",
    "corpus_memory",
    "memory_keys_per_chunk",
    "question_memory",
    "question_memory_weights",
    "question_memory_temperatures",
    "memory_weight",
    "memory_temperature",
)


def check_run(
    config: FinetuneConfig,
    explicit: AbstractSet[str],
    *,
    unlabeled_corpus: bool,
    index_model: bool = False,
    checkpoints: bool = False,
    target_questions: bool = False,
    adapter_model: bool = False,
    bias: bool = False,
    pseudo_query_llm: bool = False,
    questions_on_target: Optional[bool] = None,
    store_memory: str = "",
) -> None:
    """Every rule about what an option needs from the rest of the run, in one place: an ``OptionError`` naming the fix.

    ``FinetuneConfig.check`` holds the rules among options; this one the rules between options and what
    the run is given. A default never fails a rule: only the options the caller set (``explicit``) do.

    Args:
        config: the run's options.
        explicit: the names of the options the caller set.
        unlabeled_corpus: the run has a searched corpus without labels.
        index_model: documents and queries come from two models (a cross-model run).
        checkpoints: the run has a checkpoint folder.
        target_questions: the run has labelled questions about the searched corpus, as evidence.
        adapter_model: the caller passed a start adapter.
        bias: the caller asked for a bias term.
        pseudo_query_llm: an LLM writes the pseudo-queries (instead of drawing sentences).
        questions_on_target: whether some labelled question's chunk is in the searched corpus (None: not
            known yet; the question memory is built only when there is one).
        store_memory: ``adapterkit fit`` on a store: ``"table"`` (the sentence memory is built in the
            store's database), ``"sampled"`` (training reads a sample, and no sentence memory is built) or
            ``""`` (the whole corpus is read; the engine builds the memory).
    """
    unused = [name for name in CORPUS_OPTIONS if name in explicit]
    if unused and not unlabeled_corpus:
        raise OptionError(
            f"{unused[0]} acts on the corpus you will search (its pseudo-queries and memories), and no unlabeled_corpus "
            "was given: give unlabeled_corpus too, or leave it out."
        )
    if pseudo_query_llm and not unlabeled_corpus:
        raise OptionError(
            "pseudo_query_llm writes pseudo-queries about the corpus you will search: give unlabeled_corpus too, or leave it out."
        )
    if pseudo_query_llm and "pseudo_query_words" in explicit:
        raise OptionError(
            "pseudo_query_words cuts sentences into windows, and pseudo_query_llm writes the pseudo-queries instead: drop one."
        )
    if store_memory and "corpus_memory" in explicit and config.corpus_memory:
        raise OptionError(
            "With sample_chunks or memory_table the sentence memory covers every stored chunk, so it is built by "
            "memory_table (in the store's own database), not from what training reads: leave corpus_memory out."
        )
    given = [name for name in ("memory_keys_per_chunk", "memory_weight", "memory_temperature") if name in explicit]
    if given and store_memory == "sampled":
        raise OptionError(
            f"{given[0]} sets the sentence memory, which a sampled store gets only with memory_table: give one, or leave it out."
        )
    pull = [name for name in ("memory_weight", "memory_temperature") if name in explicit]
    if pull and not config.corpus_memory and store_memory != "table":
        raise OptionError(f"{pull[0]} sets the sentence memory's pull, and corpus_memory=False builds none: drop one of them.")
    grid = [name for name in ("question_memory_weights", "question_memory_temperatures") if name in explicit]
    if grid and not config.question_memory:
        raise OptionError(f"{grid[0]} is the question memory's grid, and question_memory=False builds none: drop one of them.")
    if grid and questions_on_target is False:
        raise OptionError(
            f"{grid[0]} is the grid of a memory of labelled questions about the searched corpus, and no labelled question's "
            "chunk is in it (`adapterkit fit`: give --questions): leave it out."
        )
    if bias and adapter_model:
        raise OptionError("bias adds a bias term to the adapter the engine builds, and adapter_model is given: give it a bias yourself.")
    if target_questions and not unlabeled_corpus:
        raise OptionError("target_questions are about the corpus you will search: give unlabeled_corpus too, or train on them.")
    if "checkpoint_save_steps" in explicit and not checkpoints:
        raise OptionError(
            "checkpoint_save_steps sets how often a run saves checkpoints, and this one keeps none (no "
            "model_checkpoint_path; `adapterkit fit` keeps none, as a cut-off fit starts again from its cached "
            "embeddings): give a model_checkpoint_path, or leave checkpoint_save_steps out."
        )
    if "map_sample" in explicit and not index_model:
        raise OptionError(
            "map_sample sizes the start map of a cross-model run (index_model; `adapterkit fit` fits over one "
            "model): give index_model too, or leave map_sample out."
        )
    if index_model:  # queries and documents in two models' spaces
        if adapter_model:
            raise OptionError(
                "With an index_model the adapter starts at the map fitted on the paired sample (a LinearLayer "
                "from the query model's dimension to the index's); leave adapter_model=None."
            )
        if bias:
            raise OptionError("With an index_model the adapter is the fitted map (no bias); leave bias=False.")
        if config.hard_negatives:
            raise OptionError(
                "hard_negatives are mined by comparing queries with documents in one model's space; with an "
                "index_model the two are in different spaces: pass hard_negatives=0."
            )


def same_value(a: Any, b: Any) -> bool:
    """Whether two option values are the same (a list and a tuple of equal items are; arrays never raise)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # an array's == is elementwise
        return False


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_value(name: str, text: str, kind: Any) -> Any:
    """``text`` (as typed on a command line) read as a value of type ``kind``; a ``ValueError`` names ``name``."""

    def wrong(what: str) -> OptionError:
        return OptionError(f"--set {name}={text}: {name} takes {what}.")

    optional = typing.get_origin(kind) is Union and type(None) in typing.get_args(kind)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    if optional:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        word = text.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise wrong(f"true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")
        return word in TRUE_WORDS
    if kind is int:
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip()):  # ASCII digits only: int() also reads "1_0" and other scripts' digits
            raise wrong("a whole number")
        return int(text.strip(), 10)
    if kind is float or kind == Union[int, float]:
        if len(text) > 60 or not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text.strip()):
            raise wrong("a number")
        value = float(text)
        if not math.isfinite(value):
            raise wrong("a finite number")
        return int(value) if kind is not float and value.is_integer() and "." not in text and "e" not in text.lower() else value
    if kind is str:
        return text
    origin = typing.get_origin(kind)
    if origin in (dict, tuple):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the JSON reader goes
            raise wrong("JSON: " + ('an object, e.g. {"lr": 0.001}' if origin is dict else "a list, e.g. [0.1, 0.5]")) from None
        if origin is dict and isinstance(value, dict):
            return value
        if origin is tuple and isinstance(value, list):
            return tuple(value)
        raise wrong("a JSON " + ("object" if origin is dict else "list"))
    raise OptionError(f"--set {name}: {name} is a Python class; set it in Python (FinetuneConfig({name}=...)), not on the command line.")


def parse_options(pairs: Dict[str, str], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{name: text}`` from a command line, each read by its field's type and checked together as a ``FinetuneConfig``.

    Args:
        pairs: option names and their text, e.g. ``{"epochs": "8", "guard": "false"}``.
        extra: other options the caller takes, ``{name: type}`` (e.g. the chunker's ``chunk_size``).
    """
    kinds = {**typing.get_type_hints(FinetuneConfig), **(extra or {})}
    values = {}
    for name, text in pairs.items():
        if name not in kinds:
            raise OptionError(
                f"--set {name}: not a training or chunking option (the command's own options are flags, e.g. "
                f"--embed-model); --set takes: {', '.join(sorted(kinds))}."
            )
        values[name] = parse_value(name, text, kinds[name])
    FinetuneConfig().updated(**{k: v for k, v in values.items() if k not in (extra or {})})  # every rule, before any work
    return values
