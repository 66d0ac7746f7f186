"""Question generation: the real offline model on real Lyft chunks, OpenAI's client against a local fake
endpoint (HTTP is the only thing faked), kill-and-resume, parsing, and short-chunk skipping."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Optional

import pytest
from helpers import marked_chunks, openai_llm
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode

from adapterkit import EmbeddingQAFinetuneDataset
from adapterkit.data.llms import TransformersLLM, resolve_llm, smollm2_gguf
from adapterkit.data.questions import (
    _workers,
    generate_qa_embedding_pairs,
    parse_questions,
)

STOPWORDS = set("what which when where does this that with from about their there have been will would could should".split())


def content_words(text: str) -> set:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower())} - STOPWORDS


# ---------------------------------------------------------------- the real offline model, real chunks


@pytest.fixture(scope="module")
def smollm() -> TransformersLLM:
    # One thread: on a machine whose cores other jobs keep busy, two threads run several times slower.
    return resolve_llm("default", max_new_tokens=48, num_threads=1)


@pytest.mark.slow
def test_offline_model_asks_questions_about_real_lyft_chunks(smollm, train_full, tmp_path):
    markers = ["LyftUpinitiative", "areindependent contractors", "action is brought to enforce"]
    nodes = [TextNode(id_=node_id, text=text) for marker in markers for node_id, text in list(train_full.corpus.items()) if marker in text][
        : len(markers)
    ]
    assert len(nodes) == 3 and isinstance(smollm, TransformersLLM)
    assert _workers(smollm, 4) == 1  # CPU bound: one chunk at a time
    folder, gguf_file = smollm2_gguf()
    assert resolve_llm(f"hf:{folder}", gguf_file=gguf_file)._model is smollm._model  # loaded once per process
    assert resolve_llm(f"gguf:{folder}/{gguf_file}")._model is smollm._model  # a GGUF file by its path
    with pytest.raises(FileNotFoundError, match="path of a .gguf"):
        resolve_llm(f"gguf:{folder}/missing.gguf")

    ds = generate_qa_embedding_pairs(nodes, llm=smollm, output_path=tmp_path / "qa.json", verbose=False)

    assert ds.corpus == {n.node_id: n.text for n in nodes}
    assert ds.stats.generated == 3 and ds.stats.failed == 0
    asked = [(question, ds.relevant_docs[qid][0]) for qid, question in ds.queries.items()]
    assert all(question.endswith("?") for question, _ in asked), asked
    # About its own chunk: shares content words with it. A 135M model strays now and then
    # ("What is the most impactful aspect of your mission?"), so most questions, not all, and
    # at least one for every chunk.
    grounded = [(q, node) for q, node in asked if content_words(q) & content_words(ds.corpus[node])]
    assert {node for _, node in grounded} == set(ds.corpus), asked
    assert len(grounded) >= max(3, 2 * len(asked) // 3), asked
    assert EmbeddingQAFinetuneDataset.from_json(tmp_path / "qa.json").queries == ds.queries


# ---------------------------------------------------------------- OpenAI's client, fake endpoint


def test_openai_llm_runs_chunks_concurrently(fake_openai):
    fake_openai.delay = 0.2
    nodes = marked_chunks(6)
    ds = generate_qa_embedding_pairs(nodes, llm=openai_llm(fake_openai), max_workers=3, verbose=False)

    assert fake_openai.requests == 6 and fake_openai.max_in_flight > 1
    assert len(ds.queries) == 12 and ds.stats.per_chunk == {2: 6}
    assert ds.stats.dropped_lines == 12  # "Here are two questions:" and "Good luck!" of each answer
    for qid, question in ds.queries.items():
        marker = re.search(r"CHUNK-\d+", question).group(0)
        assert ds.relevant_docs[qid] == [f"node-{marker.split('-')[1]}"]
        assert question in (f"What does {marker} say about revenue?", f"How many rides did {marker} count?")


def test_openai_http_500_is_retried(fake_openai):
    fake_openai.fail_first = 1
    ds = generate_qa_embedding_pairs(marked_chunks(1), llm=openai_llm(fake_openai), retry_delay=0.01, verbose=False)
    assert fake_openai.requests == 2
    assert ds.stats.failed == 0 and len(ds.queries) == 2


def test_openai_failing_every_attempt(fake_openai, tmp_path):
    fake_openai.fail_first = 10**6
    llm = openai_llm(fake_openai)
    out = tmp_path / "qa.json"
    ds = generate_qa_embedding_pairs(marked_chunks(1), llm=llm, retry_limit=3, retry_delay=0.01, output_path=out, verbose=False)
    assert fake_openai.requests == 3 and ds.stats.failed == 1 and not ds.queries
    assert out.with_name("qa.json.progress.jsonl").read_text() == ""  # a rerun tries it again
    with pytest.raises(RuntimeError, match="after 2 attempts"):
        generate_qa_embedding_pairs(marked_chunks(1), llm=llm, retry_limit=2, retry_delay=0.01, on_failure="fail", verbose=False)


# ---------------------------------------------------------------- kill and resume


class ScriptedLLM(CustomLLM):
    """Answers with two questions that echo the chunk's marker; raises KeyboardInterrupt after ``stop_after`` calls."""

    stop_after: Optional[int] = None
    calls: int = 0
    max_concurrency: Optional[int] = None
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with self._lock:  # worker threads call it too
            if self.stop_after is not None and self.calls >= self.stop_after:
                raise KeyboardInterrupt  # what Ctrl-C (or a kill) does to a run mid-way
            self.calls += 1
        marker = re.search(r"CHUNK-\d+", prompt).group(0)
        return CompletionResponse(text=f"1. What is {marker} about?\n2. Who reported {marker}?")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted=formatted, **kwargs)


def test_killed_run_resumes_without_redoing_or_losing_chunks(tmp_path):
    nodes = marked_chunks(7)
    out = tmp_path / "qa.json"
    first = ScriptedLLM(stop_after=3, max_concurrency=1)  # one at a time, as the local CPU model runs
    with pytest.raises(KeyboardInterrupt):
        generate_qa_embedding_pairs(nodes, llm=first, output_path=out, verbose=False)
    progress = out.with_name("qa.json.progress.jsonl")
    saved = [json.loads(line) for line in progress.read_text().splitlines()]
    assert len(saved) == 3 and not out.exists()
    with open(progress, "a") as fh:
        fh.write('{"node_id": "node-5", "quer')  # a kill in the middle of writing a line

    second = ScriptedLLM()
    ds = generate_qa_embedding_pairs(nodes, llm=second, output_path=out, verbose=False)

    assert first.calls + second.calls == len(nodes)  # nothing redone, nothing lost
    assert ds.stats.resumed == 3 and ds.stats.generated == 4 and len(ds.queries) == 14
    for record in saved:  # the first run's questions kept, with their ids
        assert all(ds.queries[qid] == q and ds.relevant_docs[qid] == [record["node_id"]] for qid, q in record["queries"].items())
    for qid, question in ds.queries.items():
        number = re.search(r"CHUNK-(\d+)", question).group(1)
        assert ds.relevant_docs[qid] == [f"node-{number}"]
    assert EmbeddingQAFinetuneDataset.from_json(out).queries == ds.queries

    third = ScriptedLLM()
    again = generate_qa_embedding_pairs(nodes, llm=third, output_path=out, verbose=False)
    assert third.calls == 0 and again.queries == ds.queries


def test_killed_threaded_run_loses_at_most_the_chunks_in_flight(tmp_path):
    nodes = marked_chunks(12)
    out = tmp_path / "qa.json"
    first = ScriptedLLM(stop_after=5, max_concurrency=3)
    with pytest.raises(KeyboardInterrupt):
        generate_qa_embedding_pairs(nodes, llm=first, output_path=out, max_workers=8, verbose=False)
    second = ScriptedLLM()
    ds = generate_qa_embedding_pairs(nodes, llm=second, output_path=out, verbose=False)
    assert len(ds.queries) == 24 and ds.stats.per_chunk == {2: 12}
    assert len(nodes) <= first.calls + second.calls <= len(nodes) + 2  # 3 in flight, one of them interrupted
    assert ds.stats.resumed >= first.calls - 2


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("1. What is Lyft's revenue?\n2) Why not?\n", ["What is Lyft's revenue?"]),  # 2 words: too short
        (
            'Here are 2 questions:\n1. **What is Lyft\'s revenue?**\n2) "When did Lyft launch?"',
            ["What is Lyft's revenue?", "When did Lyft launch?"],
        ),
        (
            "- What is an Active Rider?\n* Who audits Lyft's statements?\n• Who audits Lyft's statements?",
            ["What is an Active Rider?", "Who audits Lyft's statements?"],
        ),
        (
            "Q1: What drove revenue growth in 2021\nA1: Rides.\nQuestion 2: How did COVID-19 affect rides",
            ["What drove revenue growth in 2021?", "How did COVID-19 affect rides?"],
        ),
        (
            "**Question 1:** Does Lyft own its vehicles? **Question 2:** Where is Lyft based?",
            ["Does Lyft own its vehicles?", "Where is Lyft based?"],
        ),
        ("1.What are the main risks? 2. Who is the CEO of Lyft?\n(3) What?", ["What are the main risks?", "Who is the CEO of Lyft?"]),
        ("> “How does Lyft define Active Riders?”\n", ["How does Lyft define Active Riders?"]),
        ("1. What is the text about?\n2. What is the purpose of this passage?", []),  # cannot pick out a chunk
        ("1. Inaccuracies in our key metrics;\n2. Our marketing efforts;\n\nThe text is about risks.", []),
        ("1. What is the cost of the 2023 2023 2023 2023 plan?", []),  # a greedy loop
        ("What is the 2018 California 2022 2030 2031 2032 2033 2034 20", []),
        ("1. What are the details of the 2 questions you requested?\n2. How can I help you?", ["How can I help you?"]),
        ("1. What is the COVID-19 impact on rides?\n2. What is the COVID-19 impact on", ["What is the COVID-19 impact on rides?"]),
        ("", []),
    ],
)
def test_parse_questions(answer, expected):
    assert parse_questions(answer) == expected


def test_at_most_num_questions_per_chunk_are_kept():
    class Chatty(ScriptedLLM):
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text="\n".join(f"{i}. What happened in quarter {i}?" for i in range(1, 6)))

    ds = generate_qa_embedding_pairs(marked_chunks(1), llm=Chatty(), num_questions_per_chunk=3, verbose=False)
    assert list(ds.queries.values()) == [f"What happened in quarter {i}?" for i in (1, 2, 3)]


# ---------------------------------------------------------------- short chunks


def test_chunks_too_short_are_skipped_and_counted(train_full):
    short = {k: t for k, t in train_full.corpus.items() if len(t.strip()) < 100}
    assert min(len(t) for t in short.values()) == 1  # the published set has 1-character chunks
    nodes = {**short, "node-1": marked_chunks(2)["node-1"]}
    llm = ScriptedLLM()
    ds = generate_qa_embedding_pairs(nodes, llm=llm, min_chunk_chars=100, verbose=False)
    assert llm.calls == 1 and ds.stats.skipped_short == len(short) == 9
    assert ds.corpus == nodes and len(ds.queries) == 2  # skipped chunks stay in the corpus, unasked


# ---------------------------------------------------------------- resolve_llm


def test_resolve_llm_specs(monkeypatch):
    llm = ScriptedLLM()
    assert resolve_llm(llm) is llm
    with pytest.raises(ValueError, match="'default', 'hf:<folder or hf id>', 'gguf:<file>', 'openai:<model>', 'ollama:<model>'"):
        resolve_llm("gpt-4")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        resolve_llm("openai:gpt-4o-mini")
    assert resolve_llm("openai:gpt-4o-mini", api_key="fake").model == "gpt-4o-mini"
    try:
        import llama_index.llms.ollama  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install llama-index-llms-ollama"):
            resolve_llm("ollama:llama3.2")
    else:
        assert resolve_llm("ollama:llama3.2").model == "llama3.2"


# ---------------------------------------------------------------- timeouts, Ctrl-C, changed text, empty answers


class HangingLLM(ScriptedLLM):
    """Hangs forever on the prompts whose marker is in ``hang``; answers ``answers`` (in turn) when given."""

    hang: tuple = ()
    answers: list = []
    _release: Any = PrivateAttr(default_factory=threading.Event)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        marker = re.search(r"CHUNK-\d+", prompt).group(0)
        with self._lock:
            self.calls += 1
            first_hang = marker in self.hang
            self.hang = tuple(m for m in self.hang if m != marker)  # only the first call hangs
            scripted = self.answers.pop(0) if self.answers else None
        if first_hang:
            self._release.wait()
        if scripted is not None:
            return CompletionResponse(text=scripted)
        return CompletionResponse(text=f"1. What is {marker} about?\n2. Who reported {marker}?")


def test_a_hung_call_times_out_and_is_retried(tmp_path):
    llm = HangingLLM(hang=("CHUNK-1",), max_concurrency=2)
    try:  # the first CHUNK-1 call never returns: the run ends only because the per-call timeout gave up on it
        ds = generate_qa_embedding_pairs(marked_chunks(3), llm=llm, timeout=0.3, retry_delay=0.01, max_workers=2, verbose=False)
    finally:
        llm._release.set()
    assert len(ds.queries) == 6 and ds.stats.failed == 0 and llm.calls == 4  # CHUNK-1 asked twice


def test_empty_answers_are_retried_then_not_journaled(tmp_path):
    out = tmp_path / "qa.json"
    llm = HangingLLM(answers=["", "Here you go."], max_concurrency=1)  # two answers without a question, then good ones
    ds = generate_qa_embedding_pairs(marked_chunks(1), llm=llm, retry_limit=3, retry_delay=0.01, output_path=out, verbose=False)
    assert llm.calls == 3 and len(ds.queries) == 2
    never = HangingLLM(answers=[""] * 3, max_concurrency=1)
    ds = generate_qa_embedding_pairs(
        {"node-9": marked_chunks(10)["node-9"]},
        llm=never,
        retry_limit=3,
        retry_delay=0.01,
        output_path=tmp_path / "empty.json",
        verbose=False,
    )
    assert never.calls == 3 and ds.stats.failed == 1 and not ds.queries
    assert (tmp_path / "empty.json.progress.jsonl").read_text() == ""  # a rerun asks again


def test_resume_reuses_questions_only_for_unchanged_text(tmp_path):
    out = tmp_path / "qa.json"
    nodes = marked_chunks(4)
    first = generate_qa_embedding_pairs(nodes, llm=ScriptedLLM(), output_path=out, verbose=False)
    rechunked = dict(nodes, **{"node-2": "CHUNK-22 " + "Uber reported bookings for the year. " * 4})  # same id, new text
    llm = ScriptedLLM()
    second = generate_qa_embedding_pairs(rechunked, llm=llm, output_path=out, verbose=False)
    assert llm.calls == 1 and second.stats.resumed == 3
    assert {q for q in second.queries.values() if "CHUNK-2 " in q or q.endswith("CHUNK-2?")} == set()
    assert sum("CHUNK-22" in q for q in second.queries.values()) == 2
    assert set(first.queries) - set(second.queries) == {q for q, d in first.relevant_docs.items() if d == ["node-2"]}


HUNG_SCRIPT = """
import re, sys, threading
from typing import Any
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from adapterkit.data.questions import generate_qa_embedding_pairs

class Stuck(CustomLLM):
    max_concurrency: int = 3
    @property
    def metadata(self):
        return LLMMetadata(model_name="stuck")
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        marker = re.search(r"CHUNK-\\d+", prompt).group(0)
        if marker != "CHUNK-0":
            sys.stdout.write(f"hung {marker}\\n")  # one write per line: worker threads print at once
            sys.stdout.flush()
            threading.Event().wait()  # never answers
        return CompletionResponse(text=f"1. What is {marker} about?\\n2. Who reported {marker}?")
    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        yield self.complete(prompt)

chunks = {f"node-{i}": f"CHUNK-{i} " + "Lyft reported revenue and rides for the year. " * 4 for i in range(6)}
print("started", flush=True)
generate_qa_embedding_pairs(chunks, llm=Stuck(), output_path=sys.argv[1], max_workers=3, timeout=None, verbose=False)
"""


@pytest.mark.slow
def test_ctrl_c_stops_at_once_with_calls_hanging_and_keeps_answers(tmp_path):
    import signal
    import subprocess
    import sys

    script = tmp_path / "hung.py"
    script.write_text(HUNG_SCRIPT)
    out = tmp_path / "qa.json"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    progress = tmp_path / "qa.json.progress.jsonl"
    # Ctrl-C once CHUNK-0's answer is journaled and the other workers are stuck inside the LLM; the
    # process says when a call hangs, so nothing here waits on a guess of how long that takes.
    hung = 0
    while hung < 2:
        line = proc.stdout.readline()
        assert line, "the script ended before its calls hung: " + proc.stderr.read()[-2000:]
        hung += line.count("hung ")
    for _ in range(2400):  # a guard against a hang (2 minutes), not a measure of speed
        if progress.is_file() and progress.read_text().strip():
            break
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)  # before: the pool's threads kept the process alive
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    saved = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [r["node_id"] for r in saved] == ["node-0"]
