"""Local Hugging Face models served in the gateway's own process, as a litellm custom provider.

`hf:./models/student` in config becomes the litellm model `kdroute_hf/<absolute dir>`, so local
and hosted models go through the same litellm call. Generation runs in one worker thread per
model (torch releases the GIL; requests to one model queue instead of fighting for the cores), so
the event loop never blocks. A cancelled request sets a stop flag that ends generation early.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from litellm import CustomLLM, ModelResponse
from litellm.types.utils import GenericStreamingChunk

from kdroute.gateway.errors import LOCAL_PROVIDER, UpstreamError
from kdroute.messages import message_text

DEFAULT_MAX_TOKENS = 64


@dataclass
class LocalModel:
    """A loaded model, its tokenizer, and the one thread that runs its generations."""

    path: str
    model: Any
    tokenizer: Any
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="kdroute-hf"))

    def prompt_ids(self, messages: list[dict], max_new: int):
        text = self.tokenizer.apply_chat_template(
            [{"role": m.get("role"), "content": message_text(m)} for m in messages],
            tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]  # (1, T)
        # Keep the most recent context that leaves room for the answer in the position table.
        room = max(getattr(self.model.config, "n_positions", 1024) - max_new, 1)
        return ids[:, -room:]

    def generate(self, messages: list[dict], params: dict, stop: threading.Event,
                 streamer=None) -> tuple[str, int, int, str]:
        """Greedy unless a temperature > 0 is given. Returns (text, prompt, completion, finish)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        max_new = int(params.get("max_tokens") or params.get("max_completion_tokens")
                      or DEFAULT_MAX_TOKENS)
        ids = self.prompt_ids(messages, max_new)
        temperature = params.get("temperature")
        sampling = {"do_sample": True, "temperature": float(temperature),
                    "top_p": float(params.get("top_p") or 1.0)} \
            if temperature else {"do_sample": False}
        trim = StopTrimmer(params.get("stop"))
        with torch.inference_mode():
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                stopping_criteria=StoppingCriteriaList([_Cancelled()]), streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=trim.stops or None, tokenizer=self.tokenizer if trim.stops else None,
                **sampling)
        new = out[0, ids.shape[1]:]  # (completion_tokens,)
        text = trim.feed(self.tokenizer.decode(new, skip_special_tokens=True)) + trim.flush()
        finish = "stop" if trim.done or len(new) < max_new else "length"
        return text, int(ids.shape[1]), int(len(new)), finish


class LocalHFProvider(CustomLLM):
    """litellm custom provider `kdroute_hf`: the model name is the model's directory."""

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[str, LocalModel] = {}
        self._lock = threading.Lock()

    def load(self, path: str) -> LocalModel:
        with self._lock:
            if path not in self._models:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(path)
                    model = AutoModelForCausalLM.from_pretrained(path).eval()
                except (OSError, ValueError) as exc:
                    raise UpstreamError(503, f"cannot load local model {path}: {exc}") from None
                self._models[path] = LocalModel(path, model, tokenizer)
            return self._models[path]

    async def acompletion(self, model: str, messages: list, *args, optional_params: dict,
                          **kwargs) -> ModelResponse:
        lm = await asyncio.to_thread(self.load, model)
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            text, n_in, n_out, finish = await loop.run_in_executor(
                lm.executor, lm.generate, messages, optional_params, stop)
        finally:
            stop.set()  # on cancellation the worker stops at its next token
        return _response(model, text, n_in, n_out, finish)

    def completion(self, model: str, messages: list, *args, optional_params: dict,
                   **kwargs) -> ModelResponse:
        lm = self.load(model)
        text, n_in, n_out, finish = lm.executor.submit(
            lm.generate, messages, optional_params, threading.Event()).result()
        return _response(model, text, n_in, n_out, finish)

    async def astreaming(self, model: str, messages: list, *args, optional_params: dict,
                         **kwargs):
        from transformers import TextIteratorStreamer

        lm = await asyncio.to_thread(self.load, model)
        stop = threading.Event()
        streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=0.05)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(lm.executor, lm.generate, messages, optional_params, stop,
                                   streamer)
        trim = StopTrimmer(optional_params.get("stop"))
        try:
            async for piece in _drain(streamer, job):
                if text := trim.feed(piece or ""):
                    yield GenericStreamingChunk(text=text, is_finished=False, finish_reason="",
                                                usage=None, index=0, tool_use=None)
            if text := trim.flush():
                yield GenericStreamingChunk(text=text, is_finished=False, finish_reason="",
                                            usage=None, index=0, tool_use=None)
            _, n_in, n_out, finish = await job
            yield GenericStreamingChunk(
                text="", is_finished=True, finish_reason=finish, index=0, tool_use=None,
                usage={"prompt_tokens": n_in, "completion_tokens": n_out,
                       "total_tokens": n_in + n_out})
        finally:
            stop.set()


class StopTrimmer:
    """Streamed text without the first stop string and what follows it (OpenAI semantics, as the
    non-streamed answer is trimmed): the tail that could still grow into a stop string is held
    back until the next piece shows whether it does."""

    def __init__(self, stop: str | list[str] | None):
        self.stops = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]
        self.held = ""
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        if not self.stops:
            return piece
        self.held += piece
        hits = [self.held.index(s) for s in self.stops if s in self.held]
        if hits:
            self.done = True
            return self.held[: min(hits)]
        keep = 0  # the longest tail that is a proper prefix of some stop string
        for k in range(min(max(map(len, self.stops)) - 1, len(self.held)), 0, -1):
            if any(s.startswith(self.held[-k:]) for s in self.stops):
                keep = k
                break
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self) -> str:
        """What is still held back once generation ended (no stop string completed)."""
        out, self.held = ("" if self.done else self.held), ""
        return out


async def _drain(streamer, job: asyncio.Future):
    """Text pieces from a TextIteratorStreamer fed by `job`, without blocking the event loop."""
    import queue

    while True:
        try:
            piece = await asyncio.to_thread(_next_piece, streamer)
        except queue.Empty:
            if job.done():
                job.result()  # re-raise a generation error
                return
            continue
        if piece is None:
            return
        yield piece


def _next_piece(streamer) -> str | None:
    try:
        return next(streamer)
    except StopIteration:
        return None


def _response(model: str, text: str, n_in: int, n_out: int, finish: str) -> ModelResponse:
    return ModelResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model,
        object="chat.completion",
        choices=[{"index": 0, "finish_reason": finish,
                  "message": {"role": "assistant", "content": text}}],
        usage={"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out})


_provider: LocalHFProvider | None = None


def register_local_provider() -> LocalHFProvider:
    """Add the `kdroute_hf` provider to litellm once per process (litellm keeps a module list)."""
    global _provider
    import litellm

    if _provider is None:
        _provider = LocalHFProvider()
    if not any(item.get("provider") == LOCAL_PROVIDER for item in litellm.custom_provider_map):
        litellm.custom_provider_map.append(
            {"provider": LOCAL_PROVIDER, "custom_handler": _provider})
    return _provider
