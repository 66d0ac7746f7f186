"""Generate (question, chunk) pairs with any LlamaIndex LLM, including the offline default on a CPU.

``generate_qa_embedding_pairs`` has LlamaIndex's call shape and returns an ``EmbeddingQAFinetuneDataset``.
Unlike LlamaIndex's, it runs chunks concurrently where the LLM allows, backs off between retries,
saves every finished chunk as it goes (a killed run resumes where it stopped), cleans up small models'
untidy answers, and reports how many chunks gave how many usable questions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, cast

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import LLM
from llama_index.core.schema import BaseNode
from tqdm.auto import tqdm

from adapterkit.data.datasets import EmbeddingQAFinetuneDataset, node_texts
from adapterkit.data.llms import resolve_llm
from adapterkit.data.question_parsing import answer_pieces, parse_questions
from adapterkit.errors import AdapterkitError
from adapterkit.logs import show_messages

__all__ = [
    "DEFAULT_QA_GENERATE_PROMPT_TMPL",
    "LLAMAINDEX_QA_GENERATE_PROMPT_TMPL",
    "GeneratedQADataset",
    "QAGenerationStats",
    "generate_qa_embedding_pairs",
    "parse_questions",
]

logger = logging.getLogger(__name__)

# Text first, one short plain instruction last. Measured with SmolLM2-135M on Lyft chunks, 2 questions
# asked per chunk: "Write 2 questions about the text above." gave 2 usable questions out of 12 (mostly
# "What is the text about?"); an instruction placed before a long chunk is forgotten (the model copies
# the chunk); this wording gave 10 of 12 on the same 6 chunks and 10 of 12 on 6 others, naming things
# in the chunk. Large LLMs follow it as well.
DEFAULT_QA_GENERATE_PROMPT_TMPL = "{context_str}\n\nWrite {num_questions_per_chunk} specific questions about the details above."

# LlamaIndex's own template, for large LLMs; too long for a 135M model to follow.
LLAMAINDEX_QA_GENERATE_PROMPT_TMPL = """\
Context information is below.

---------------------
{context_str}
---------------------

Given the context information and no prior knowledge.
generate only questions based on the below query.

You are a Teacher/ Professor. Your task is to setup \
{num_questions_per_chunk} questions for an upcoming \
quiz/examination. The questions should be diverse in nature \
across the document. Restrict the questions to the \
context information provided."
"""


@dataclass
class QAGenerationStats:
    """What one ``generate_qa_embedding_pairs`` run did.

    ``per_chunk`` maps a number of usable questions to how many chunks gave that many (all runs);
    the rates count only this run's work.
    """

    chunks: int = 0
    skipped_short: int = 0
    resumed: int = 0
    generated: int = 0
    failed: int = 0
    questions: int = 0
    new_questions: int = 0
    dropped_lines: int = 0
    seconds: float = 0.0
    per_chunk: Counter = field(default_factory=Counter)

    @property
    def questions_per_second(self) -> float:
        return self.new_questions / self.seconds if self.seconds else 0.0

    @property
    def seconds_per_chunk(self) -> float:
        return self.seconds / self.generated if self.generated else 0.0

    def summary(self) -> str:
        spread = ", ".join(f"{n} chunks with {q}" for q, n in sorted(self.per_chunk.items()))
        return (
            f"{self.questions} questions from {self.chunks} chunks ({spread or 'none'}); "
            f"{self.skipped_short} skipped as too short, {self.resumed} done in an earlier run, "
            f"{self.failed} failed; this run: {self.generated} chunks, {self.new_questions} questions, "
            f"{self.dropped_lines} unusable lines dropped, {self.seconds_per_chunk:.2f} s/chunk, "
            f"{self.questions_per_second:.2f} questions/s"
        )


class GeneratedQADataset(EmbeddingQAFinetuneDataset):
    """An ``EmbeddingQAFinetuneDataset`` that also carries the run's ``stats`` (not saved to JSON)."""

    _stats: QAGenerationStats = PrivateAttr(default_factory=QAGenerationStats)

    @property
    def stats(self) -> QAGenerationStats:
        return self._stats


def _progress_path(output_path: Union[str, Path]) -> Path:
    return Path(str(output_path) + ".progress.jsonl")


def text_sha256(text: str) -> str:
    """What a journaled chunk is keyed on beside its node id: questions about other text are not reused."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read_progress(path: Path, texts: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """``{node_id: {query_id: question}}`` of the chunks a previous run finished on the same text."""
    done: Dict[str, Dict[str, str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                node_id, queries = record["node_id"], record["queries"]
                fresh = node_id in texts and record.get("text_sha256") == text_sha256(texts[node_id])
            except (ValueError, KeyError, TypeError):  # the line a kill cut short
                continue
            if fresh and isinstance(queries, dict) and queries and all(isinstance(q, str) for q in queries.values()):
                done[node_id] = queries
    return done


class CallsDeclined(AdapterkitError, RuntimeError):
    """The caller declined the LLM calls a run would make (nothing was sent)."""


class EmptyAnswerError(AdapterkitError, ValueError):
    """The LLM answered, but no usable question was in the answer."""


def _call_with_timeout(llm: LLM, prompt: str, timeout: Optional[float]) -> str:
    """``llm.complete(prompt).text`` in a daemon thread: a call that hangs is abandoned after ``timeout`` s
    (and never keeps the process alive), and Ctrl-C reaches the caller at once."""
    result: Dict[str, Any] = {}

    def work() -> None:
        try:
            result["text"] = llm.complete(prompt).text
        except BaseException as exc:  # handed to the caller, KeyboardInterrupt included
            result["error"] = exc

    thread = threading.Thread(target=work, name="qa-gen-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the LLM call did not answer within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["text"] or ""


def _ask(llm: LLM, prompt: str, retry_limit: int, retry_delay: float, timeout: Optional[float]) -> Tuple[List[str], int]:
    """``(usable questions, dropped lines)`` of one chunk; ``retry_limit`` attempts in all (an error, a
    timeout and an answer without a usable question each cost one), waiting ``retry_delay`` * 1, 2, 4, ...

    A loop rather than tenacity: an attempt here must also give up on a call that never returns
    (``_call_with_timeout``) and count an unusable answer as a failure, which tenacity would only wrap."""
    for attempt in range(retry_limit):
        try:
            answer = _call_with_timeout(llm, prompt, timeout)
            questions = parse_questions(answer)
            if not questions:
                raise EmptyAnswerError(f"no usable question in the answer {answer[:80]!r}")
            return questions, len(answer_pieces(answer)) - len(questions)
        except Exception as exc:  # network errors, rate limits, 5xx, timeouts, empty answers: worth another try
            if attempt + 1 >= retry_limit:
                raise
            delay = retry_delay * 2**attempt
            logger.warning("LLM call failed (%s: %s); retry %d/%d in %.1f s", type(exc).__name__, exc, attempt + 1, retry_limit - 1, delay)
            time.sleep(delay)
    raise ValueError("retry_limit must be at least 1")


def _workers(llm: LLM, max_workers: int) -> int:
    # LLMs that declare a limit (the local CPU model says 1) get no more threads than that.
    limit = getattr(llm, "max_concurrency", None)
    return max(1, min(max_workers, limit) if isinstance(limit, int) and limit > 0 else max_workers)


Answer = Union[Tuple[List[str], int], BaseException]


def _answers(
    llm: LLM, prompts: Sequence[Tuple[str, str]], workers: int, retry_limit: int, retry_delay: float, timeout: Optional[float]
) -> Iterator[Tuple[str, Answer]]:
    """``(node_id, (questions, dropped lines) or the exception of its last attempt)`` as chunks finish.

    Workers are daemon threads, so a stop never waits for them. On Ctrl-C (or any error in this
    thread) no further chunk is started, the chunks already answered are handed over, and the
    interrupt is raised again.
    """
    todo: "queue.Queue[Tuple[str, str]]" = queue.Queue()
    for item in prompts:
        todo.put(item)
    done: "queue.Queue[Tuple[str, Answer]]" = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                node_id, prompt = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((node_id, _ask(llm, prompt, retry_limit, retry_delay, timeout)))
            except BaseException as exc:
                done.put((node_id, exc))

    for i in range(min(workers, len(prompts))):
        threading.Thread(target=worker, name=f"qa-gen-{i}", daemon=True).start()
    received = 0
    try:
        while received < len(prompts):
            try:
                node_id, answer = done.get(timeout=0.2)  # short waits: Ctrl-C is seen at once
            except queue.Empty:
                continue
            received += 1
            if isinstance(answer, KeyboardInterrupt):
                raise answer
            yield node_id, answer
    except GeneratorExit:  # the caller stopped reading (it raised): nothing more to hand over
        stop.set()
        raise
    except BaseException:
        stop.set()  # start no queued chunk after a stop...
        while True:  # ...but hand over the ones already answered
            try:
                node_id, answer = done.get_nowait()
            except queue.Empty:
                break
            if not isinstance(answer, BaseException):
                yield node_id, answer
        raise
    finally:
        stop.set()


def _open_journal(progress: Path) -> Any:
    progress.parent.mkdir(parents=True, exist_ok=True)
    journal = open(progress, "a", encoding="utf-8")
    if progress.stat().st_size and not progress.read_bytes().endswith(b"\n"):
        journal.write("\n")  # a kill mid-line: start the next record on a line of its own
    return journal


def _dataset(texts: Dict[str, str], done: Dict[str, Dict[str, str]], stats: QAGenerationStats) -> GeneratedQADataset:
    """The questions of ``done`` in node order (whatever order the chunks finished in), with ``stats``."""
    queries, relevant_docs = {}, {}
    for node_id in texts:
        for qid, question in done.get(node_id, {}).items():
            queries[qid], relevant_docs[qid] = question, [node_id]
        if node_id in done:
            stats.per_chunk[len(done[node_id])] += 1
    stats.questions = len(queries)
    dataset = GeneratedQADataset(queries=queries, corpus=texts, relevant_docs=relevant_docs)
    dataset._stats = stats
    return dataset


def generate_qa_embedding_pairs(
    nodes: Union[Sequence[BaseNode], Mapping[str, str]],
    llm: Union[LLM, str, None] = None,
    qa_generate_prompt_tmpl: str = DEFAULT_QA_GENERATE_PROMPT_TMPL,
    num_questions_per_chunk: int = 2,
    retry_limit: int = 3,
    on_failure: str = "continue",
    output_path: Union[str, Path, None] = None,
    max_workers: int = 4,
    min_chunk_chars: int = 100,
    retry_delay: float = 1.0,
    verbose: bool = True,
    timeout: Optional[float] = 300.0,
    confirm: Optional[Callable[[LLM, int], bool]] = None,
) -> GeneratedQADataset:
    """Ask an LLM for questions about each chunk; return them as a (query, relevant chunk) dataset.

    Args:
        nodes: LlamaIndex nodes (text via ``get_content(metadata_mode=MetadataMode.NONE)``) or a
            ``{node_id: text}`` dict.
        llm: a LlamaIndex ``LLM`` or a ``resolve_llm`` spec; None: the offline default (SmolLM2-135M).
        qa_generate_prompt_tmpl: prompt with ``{context_str}`` and ``{num_questions_per_chunk}``.
        num_questions_per_chunk: questions asked for, and the most kept, per chunk.
        retry_limit: attempts per chunk (exponential backoff between): a call that raises, times out,
            or answers without a usable question costs one.
        on_failure: ``"continue"`` (count the chunk as failed; a rerun tries it again) or ``"fail"``.
        output_path: dataset JSON written at the end. Each finished chunk is appended at once to
            ``<output_path>.progress.jsonl`` with a hash of its text, so a killed run loses only the
            chunks in flight, and a rerun with the same path skips chunks finished on the same text
            (a chunk whose text changed is asked again). Delete that file to start over.
        max_workers: concurrent LLM calls, capped by the LLM's ``max_concurrency`` (1 for local models).
        min_chunk_chars: chunks shorter than this (stripped) are not asked about, but stay in the corpus.
        retry_delay: seconds before the first retry; doubled for each next one.
        verbose: show a progress bar and print the summary.
        timeout: seconds one LLM call may take before it is abandoned and retried (None: no limit).
            Calls run in daemon threads, so a hung call never keeps the process alive after Ctrl-C.
        confirm: called as ``confirm(llm, chunks to ask)`` before the first call; False stops with
            ``CallsDeclined`` and nothing sent (``ask_before_paid_calls`` asks only for paid APIs).

    Returns:
        a ``GeneratedQADataset`` (an ``EmbeddingQAFinetuneDataset``): queries ``{uuid: question}``,
        corpus ``{node_id: text}`` of every node given, relevant_docs ``{uuid: [node_id]}``, and
        ``.stats`` (a ``QAGenerationStats``).

    Example::

        from llama_index.core.node_parser import SentenceSplitter
        nodes = SentenceSplitter().get_nodes_from_documents(documents)
        ds = generate_qa_embedding_pairs(nodes, output_path="train_dataset.json")  # offline, CPU
        ds = generate_qa_embedding_pairs(nodes, llm="openai:gpt-4o-mini", max_workers=8)
        print(ds.stats.summary())
    """
    if on_failure not in ("continue", "fail"):
        raise ValueError(f"on_failure must be 'continue' or 'fail', got {on_failure!r}.")
    if retry_limit < 1:
        raise ValueError(f"retry_limit must be at least 1, got {retry_limit}.")
    texts = node_texts(nodes)
    progress = _progress_path(output_path) if output_path else None
    done = _read_progress(progress, texts) if progress else {}
    stats = QAGenerationStats(chunks=len(texts), resumed=len(done))
    todo = []
    for node_id, text in texts.items():
        if len(text.strip()) < min_chunk_chars:
            stats.skipped_short += 1
        elif node_id not in done:
            prompt = qa_generate_prompt_tmpl.format(context_str=text, num_questions_per_chunk=num_questions_per_chunk)
            todo.append((node_id, prompt))
    if todo:
        llm = resolve_llm(llm)  # only now: loading the local model takes seconds
        if confirm is not None and not confirm(llm, len(todo)):
            raise CallsDeclined(f"Stopped before asking the LLM about {len(todo)} chunks: nothing was sent.")
    workers = _workers(cast(LLM, llm), max_workers) if todo else 1  # with todo, resolve_llm ran above

    _ask_all(
        llm,
        todo,
        texts,
        done,
        stats,
        progress,
        workers=workers,
        retry_limit=retry_limit,
        retry_delay=retry_delay,
        timeout=timeout,
        on_failure=on_failure,
        keep=num_questions_per_chunk,
        verbose=verbose,
    )
    dataset = _dataset(texts, done, stats)
    if output_path:
        dataset.save_json(output_path)
    if verbose:
        show_messages()
        logger.info(stats.summary())
    return dataset


def _ask_all(
    llm: Any,
    todo: List[Tuple[str, str]],
    texts: Mapping[str, str],
    done: Dict[str, Dict[str, str]],
    stats: QAGenerationStats,
    progress: Optional[Path],
    *,
    workers: int,
    retry_limit: int,
    retry_delay: float,
    timeout: Optional[float],
    on_failure: str,
    keep: int,
    verbose: bool,
) -> None:
    """Ask about each ``(node_id, prompt)``; each answered chunk goes into ``done`` and the journal at once."""
    journal = _open_journal(progress) if progress else None
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="Generating questions", unit="chunk", disable=not verbose or not todo)
    try:
        for node_id, answer in _answers(llm, todo, workers, retry_limit, retry_delay, timeout):
            bar.update()
            if isinstance(answer, BaseException):
                stats.failed += 1
                if on_failure == "fail":
                    raise RuntimeError(f"LLM failed on chunk {node_id} after {retry_limit} attempts: {answer}") from answer
                logger.warning("Skipping chunk %s after %d attempts: %s", node_id, retry_limit, answer)
                continue
            questions, dropped = answer
            stats.dropped_lines += dropped
            done[node_id] = {str(uuid.uuid4()): q for q in questions[:keep]}
            stats.generated += 1
            stats.new_questions += len(done[node_id])
            if journal:
                record = {"node_id": node_id, "text_sha256": text_sha256(texts[node_id]), "queries": done[node_id]}
                journal.write(json.dumps(record) + "\n")
                journal.flush()  # a killed process keeps what is flushed
            bar.set_postfix(questions=stats.new_questions, refresh=False)
    finally:
        bar.close()
        if journal:
            journal.close()
        stats.seconds = time.perf_counter() - start
