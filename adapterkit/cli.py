"""The ``adapterkit`` command: ``fit``, ``eval``, ``questions``, ``chunks`` and ``index`` over your own documents.

Each sub-command parses its options and calls one function of ``adapterkit.pipeline`` (the notebooks
call the same ones). Exit status 0 on success, 1 on an error (its message says what to fix), 2 on
wrong usage, 130 when interrupted.

    adapterkit fit my_docs --out my_model                      # train, evaluate, report
    adapterkit fit --store "postgresql://me@db/rag?table=chunks" --out my_model
    adapterkit fit my_docs --out my_model --questions my_questions.jsonl   # rows of question, file, quote
    adapterkit eval my_model my_questions.jsonl --docs my_docs
    adapterkit chunks my_docs                                  # chunk ids, files and first words
    adapterkit index my_docs --store "qdrant:///data/index?collection=docs"   # base vectors into a store
    adapterkit questions my_docs --llm openai:gpt-4o-mini --out questions.json
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable, List, Optional

from adapterkit import __version__


def _confirm(assume_yes: bool) -> Optional[Callable[[str], bool]]:
    """How to ask before paid calls: not at all with --yes, else on the terminal (no terminal: refuse)."""
    if assume_yes:
        return None

    def ask(message: str) -> bool:
        if not sys.stdin.isatty():
            print(f"{message}\nNo terminal to answer on: pass --yes to allow the calls.", file=sys.stderr)
            return False
        return input(f"{message} [y/N] ").strip().lower() in ("y", "yes")

    return ask


def _options(pairs: List[str], flags: dict) -> dict:
    """``--set epochs=8 --set guard=false``: options read by their type and checked together by the option
    registry (``FinetuneConfig``) before any work; ``flags`` are the command's own flags for options."""
    from adapterkit.training.config import parse_options

    texts: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes NAME=VALUE (a FinetuneConfig field), got {pair!r}.")
        if key in texts:
            raise ValueError(f"--set {key} is given twice ({texts[key]!r} and {value!r}): keep one.")
        texts[key] = value
    both = sorted(k for k, v in flags.items() if v is not None and k in texts)
    if both:
        raise ValueError(f"{both[0]} is given as a flag (--{both[0].replace('_', '-')}) and as --set {both[0]}=...: keep one.")
    options = parse_options(texts, extra={"chunk_size": int, "chunk_overlap": int})
    return {**options, **{k: v for k, v in flags.items() if v is not None}}


# FinetuneConfig's options users set (training.config.USER_OPTIONS, named here so that --help imports no torch)
SET_BY_USERS = (
    "epochs",
    "batch_size",
    "optimizer_params",
    "seed",
    "verbose",
    "corpus_memory",
    "question_memory",
    "memory_weight",
    "memory_keys_per_chunk",
)
QUESTIONS_HELP = (
    "your labelled questions: a .jsonl, .csv or .json file of rows with 'question', 'file' (the path, relative to "
    "DOCS_DIR, of the document that answers it) and optionally 'quote' (an exact passage of it), e.g. "
    '{"question": "How long is the warranty?", "file": "guides/warranty.md", "quote": "two years"}; '
    "or LlamaIndex's dataset JSON with chunk ids"
)


def _chunking(args: argparse.Namespace) -> dict:
    """The --chunk-size / --chunk-overlap flags that were given."""
    return {k: v for k, v in (("chunk_size", args.chunk_size), ("chunk_overlap", args.chunk_overlap)) if v is not None}


def _fit(args: argparse.Namespace) -> None:
    from adapterkit.pipeline.fit import fit_documents

    options = _options(args.set, {"epochs": args.epochs, **_chunking(args)})
    result = fit_documents(
        args.docs,
        args.out,
        store=args.store,
        sample_chunks=args.sample_chunks,
        memory_table=args.memory_table,
        embed_model=args.embed_model,
        questions=args.questions,
        llm=args.llm,
        eval_chunks=args.eval_chunks,
        overwrite=args.overwrite,
        confirm=_confirm(args.yes),
        cache=args.cache_dir,
        show_progress=not args.quiet,
        follow_symlinks=args.follow_symlinks,
        **options,
    )
    print(result.summary["verdict"])
    left_out = result.evaluation.details.get("left_out") or {}
    if left_out:
        print(
            f"{len(left_out)} of your questions were left out, each with its reason in the report: "
            + "; ".join(f"{q!r} ({why})" for q, why in list(left_out.items())[:3])
            + (" ..." if len(left_out) > 3 else "")
        )
    changes = result.changes
    if not changes["first_run"]:
        print(
            f"Since the last run: {len(changes['files_added'])} files added, {len(changes['files_changed'])} changed, "
            f"{len(changes['files_removed'])} removed; {changes['chunks_added']} chunks added, {changes['chunks_removed']} removed."
        )
    skipped = result.summary.get("skipped") or {}
    if skipped:
        print(
            f"Skipped {len(skipped)} file(s), each with its reason in the report: {', '.join(list(skipped)[:5])}"
            + (" ..." if len(skipped) > 5 else "")
        )
    print(f"Base model calls this run: {result.embedded['text']} chunks, {result.embedded['query']} queries; {result.seconds} s.")
    print(f"Evaluation: {result.evaluation.source}.")
    if result.table is not None:
        print(result.table.to_string(index=False))
    print(f"Model folder: {result.folder}\nReport: {result.report}")


def _eval(args: argparse.Namespace) -> None:
    from adapterkit.pipeline.evaluate_folder import evaluate_model_folder

    table, report = evaluate_model_folder(
        args.model_dir,
        args.questions,
        out=args.out,
        embed_model=args.embed_model,
        cache=args.cache_dir,
        show_progress=not args.quiet,
        index_model=args.index_model,
        docs=args.docs,
        follow_symlinks=args.follow_symlinks,
        **_chunking(args),
    )
    print(table.to_string(index=False))
    print(f"Report: {report}")


def _questions(args: argparse.Namespace) -> None:
    from adapterkit.pipeline.questions import write_questions

    dataset = write_questions(
        args.docs,
        args.out,
        llm=args.llm,
        questions_per_chunk=args.per_chunk,
        max_workers=args.workers,
        confirm=_confirm(args.yes),
        show_progress=not args.quiet,
        follow_symlinks=args.follow_symlinks,
        **_chunking(args),
    )
    print(dataset.stats.summary())
    print(f"Questions: {args.out}")


def _chunks(args: argparse.Namespace) -> None:
    from adapterkit.pipeline.sources import chunks_from_folder

    if args.words < 1:
        raise ValueError(f"--words is how many first words to show per chunk (at least 1), got {args.words}.")
    source = chunks_from_folder(args.docs, show_progress=False, follow_symlinks=args.follow_symlinks, **_chunking(args))
    print("chunk id\tfile\tfirst words")
    for file, ids in source.chunks_of.items():
        for chunk in ids:
            words = " ".join(source.corpus[chunk].split()[: args.words])
            print(f"{chunk}\t{file}\t{words}")
    for file, why in source.skipped.items():
        print(f"skipped {file}: {why}", file=sys.stderr)


def _index(args: argparse.Namespace) -> None:
    from adapterkit.pipeline.index import index_documents

    done = index_documents(
        args.docs,
        args.store,
        embed_model=args.embed_model,
        cache=args.cache_dir,
        show_progress=not args.quiet,
        follow_symlinks=args.follow_symlinks,
        **_chunking(args),
    )
    print(f"Indexed {done['chunks']} chunks of {done['files']} files into {done['store']}.")
    for file, why in done["skipped"].items():
        print(f"skipped {file}: {why}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="adapterkit",
        description="Fit a query adapter to your documents and evaluate it.",
        epilog="Run `adapterkit COMMAND --help` for a command's options.",
    )
    top.add_argument("--version", action="version", version=f"adapterkit {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=None, help="embedding cache folder (default: $ADAPTERKIT_CACHE_DIR or ~/.cache/adapterkit)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    folder = argparse.ArgumentParser(add_help=False)  # how a documents folder is read: the same flags wherever one is read
    folder.add_argument("--chunk-size", type=int, default=None, metavar="TOKENS", help="chunk size in tokens (default 1024)")
    folder.add_argument("--chunk-overlap", type=int, default=None, metavar="TOKENS", help="tokens neighbouring chunks share (default 200)")
    folder.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="read files that links in the folder point to outside it (default: such links are skipped and listed)",
    )

    fit = commands.add_parser(
        "fit",
        parents=[common, folder],
        help="train an adapter for a folder of documents (or a vector store) and report",
        description="Read every document under DOCS_DIR (PDF, DOCX, HTML, Markdown, text, ...), train the default "
        "adapter with its chunks as the corpus it will search, evaluate, and write MODEL_DIR with report.md.",
    )
    fit.add_argument("docs", nargs="?", metavar="DOCS_DIR", help="folder of documents (omit with --store)")
    fit.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write (a re-run on the same documents updates it)")
    fit.add_argument(
        "--store",
        metavar="URI",
        help="chunks already in a vector store: postgresql://user:pw@host/db?table=NAME or "
        "qdrant:///path?collection=NAME (stored vectors are used, nothing re-embedded)",
    )
    fit.add_argument(
        "--sample-chunks",
        type=int,
        default=None,
        metavar="N",
        help="with --store: train on the chunks your questions "
        "name and N others (a fixed sample), not every stored chunk; questions are still ranked among all of them; no sentence "
        "memory unless --memory-table",
    )
    fit.add_argument(
        "--memory-table",
        metavar="NAME",
        help="with --store: keep the sentence memory of every stored chunk under this "
        "name in the store's own database (serve it with PgMemory or QdrantMemory)",
    )
    fit.add_argument(
        "--embed-model",
        default="default",
        metavar="SPEC",
        help="base model: default (bge-small-en-v1.5, offline), minilm "
        "(all-MiniLM-L6-v2, offline), local:<sentence-transformers id or folder>, openai:<model>",
    )
    fit.add_argument(
        "--questions",
        metavar="FILE",
        help=QUESTIONS_HELP + ". A fifth is held out to score the model; the rest become "
        "a question memory where they show clearly that it helps",
    )
    fit.add_argument(
        "--llm",
        metavar="SPEC",
        help="an LLM writes questions about sampled chunks to score the model: default, hf:<id>, openai:<model>, ollama:<model>",
    )
    fit.add_argument("--eval-chunks", type=int, default=None, metavar="N", help="with --llm: most chunks it is asked about (default 40)")
    fit.add_argument("--epochs", type=int, default=None, help="training epochs (default: the package default)")
    fit.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a FinetuneConfig option, e.g. --set batch_size=64; the ones users set: {', '.join(SET_BY_USERS)}",
    )
    fit.add_argument("--overwrite", action="store_true", help="replace a model folder fitted on other documents or with another model")
    fit.add_argument("--yes", action="store_true", help="do not ask before calling a paid LLM API")
    fit.set_defaults(run=_fit)

    ev = commands.add_parser(
        "eval",
        parents=[common, folder],
        help="score a model folder next to its base model on a questions file",
        description="Base model next to the adapter on QUESTIONS (rows of question, file and quote over "
        "--docs, or LlamaIndex's dataset JSON with its corpus): "
        "hit@5, MRR@5, nDCG@10 with paired bootstrap intervals; writes eval.md, eval.json and plots.",
    )
    ev.add_argument("model_dir", metavar="MODEL_DIR")
    ev.add_argument("questions", metavar="QUESTIONS", help=QUESTIONS_HELP)
    ev.add_argument(
        "--docs",
        default=None,
        metavar="DOCS_DIR",
        help="the documents folder the question rows name files of (read with the folder's chunk settings)",
    )
    ev.add_argument("--out", default=None, metavar="DIR", help="report folder (default MODEL_DIR/eval)")
    ev.add_argument("--embed-model", default=None, metavar="SPEC", help="base model (default: the one the folder was fitted with)")
    ev.add_argument("--index-model", default=None, metavar="SPEC", help="a cross-model folder: the model that built the index")
    ev.set_defaults(run=_eval)

    qs = commands.add_parser(
        "questions",
        parents=[common, folder],
        help="have an LLM write questions about a folder's chunks",
        description="Ask an LLM for questions about each chunk of DOCS_DIR and write them: rows of question, file "
        "and quote for a .jsonl or .csv FILE, LlamaIndex's dataset JSON for a .json FILE. "
        "Resumable: a re-run asks only chunks not done yet. Asks before calling a paid API unless --yes.",
    )
    qs.add_argument("docs", metavar="DOCS_DIR")
    qs.add_argument("--llm", default="default", metavar="SPEC", help="default (offline, CPU), hf:<id>, openai:<model>, ollama:<model>")
    qs.add_argument("--out", required=True, metavar="FILE")
    qs.add_argument("--per-chunk", type=int, default=2, metavar="N", help="questions asked for per chunk (default 2)")
    qs.add_argument("--workers", type=int, default=4, metavar="N", help="concurrent LLM calls (local models: 1)")
    qs.add_argument("--yes", action="store_true", help="do not ask before calling a paid LLM API")
    qs.set_defaults(run=_questions)

    ch = commands.add_parser(
        "chunks",
        parents=[folder],
        help="list a folder's chunks: id, file and first words",
        description="Read DOCS_DIR as `fit` does and print one line per chunk: its id, its file and its first "
        "words (tab-separated), for writing questions about it.",
    )
    ch.add_argument("docs", metavar="DOCS_DIR")
    ch.add_argument("--words", type=int, default=12, metavar="N", help="first words shown per chunk (default 12)")
    ch.set_defaults(run=_chunks)

    ix = commands.add_parser(
        "index",
        parents=[common, folder],
        help="write a folder's chunks and base vectors into a vector store",
        description="Embed every chunk of DOCS_DIR with the base model (ids as `fit` gives them) and write them "
        "into a vector store, from which a model folder fitted on DOCS_DIR serves. A re-run replaces what it wrote.",
    )
    ix.add_argument("docs", metavar="DOCS_DIR")
    ix.add_argument(
        "--store",
        required=True,
        metavar="URI",
        help="qdrant:///path?collection=NAME (a local folder, made if missing) or postgresql://user:pw@host/db?table=NAME",
    )
    ix.add_argument(
        "--embed-model", default="default", metavar="SPEC", help="the base model the model folder is fitted over (default: default)"
    )
    ix.set_defaults(run=_index)
    return top


INTERRUPTED = "Interrupted: what was computed is kept (embedding cache, question journal); run again to continue."


def main(argv: Optional[List[str]] = None) -> int:
    try:  # Ctrl-C at any moment, even while the libraries load, ends with the same message and status
        args = parser().parse_args(argv)
        from adapterkit.cache import EmbeddingCacheError
        from adapterkit.data.questions import CallsDeclined
        from adapterkit.training.selection import TrainingDivergedError

        try:
            args.run(args)
        except (ValueError, TypeError, OSError, ImportError, CallsDeclined, TrainingDivergedError, EmbeddingCacheError) as exc:
            print(f"adapterkit {args.command}: error: {exc}", file=sys.stderr)  # the message names the fix
            return 1
        except RuntimeError as exc:  # a library's own failure: its words, without a traceback
            print(f"adapterkit {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if argv is None:  # the command itself (not a caller): its work is done, so a late Ctrl-C must not turn success into 130
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
