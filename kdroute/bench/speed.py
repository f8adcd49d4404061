"""Speed on the same prompts for every model: generation tokens/s, per-request latency p50/p95,
parameter count and peak memory.

Local models generate exactly `new_tokens` tokens per prompt (end-of-sequence suppressed), one
request at a time, so teacher and student do the same work. Endpoints are asked for at most
`new_tokens` tokens and their reported usage is counted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kdroute.bench.models import ModelSpec
from kdroute.errors import BackendError

SPEED_METRICS = ("tokens_per_s", "latency_p50_ms", "latency_p95_ms", "params", "peak_memory_mib",
                 "n_requests")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(latencies_s: Sequence[float], tokens: int, params: int | None,
              peak_mib: float | None) -> dict[str, float | None]:
    return {
        "tokens_per_s": tokens / sum(latencies_s) if sum(latencies_s) > 0 else None,
        "latency_p50_ms": 1000 * percentile(latencies_s, 50),
        "latency_p95_ms": 1000 * percentile(latencies_s, 95),
        "params": params, "peak_memory_mib": peak_mib, "n_requests": len(latencies_s),
    }


class PeakRss:
    """Samples this process's resident memory in a thread; `stop()` returns the peak above the
    level at `start()` in MiB (None where /proc is missing)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._statm = Path("/proc/self/statm")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base = self.peak = self._rss()

    def _rss(self) -> int | None:
        try:
            return int(self._statm.read_text().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._rss()
            if rss is not None and self.peak is not None:
                self.peak = max(self.peak, rss)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        rss = self._rss()
        if rss is None or self.base is None or self.peak is None:
            return None
        return (max(self.peak, rss) - self.base) / 2**20


def measure(spec: ModelSpec, prompts: Sequence[str], new_tokens: int, device: str) -> dict:
    if not prompts:
        raise BackendError("no prompts to measure speed on (the tasks have no generation items)")
    if spec.kind == "hf":
        return _measure_hf(spec, prompts, new_tokens, device)
    return _measure_endpoint(spec, prompts, new_tokens)


def _measure_hf(spec: ModelSpec, prompts: Sequence[str], new_tokens: int, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = PeakRss().start()
    tokenizer = AutoTokenizer.from_pretrained(spec.path)
    model = AutoModelForCausalLM.from_pretrained(spec.path).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    latencies, tokens = [], 0
    with torch.inference_mode():
        for i, prompt in enumerate([prompts[0], *prompts]):  # the first one warms up, untimed
            ids = tokenizer(prompt, return_tensors="pt").to(device)
            start = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=pad)  # (1, T + new_tokens)
            if cuda:
                torch.cuda.synchronize()
            if i > 0:
                latencies.append(time.perf_counter() - start)
                tokens += out.shape[1] - ids["input_ids"].shape[1]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else sampler.stop()
    if cuda:
        sampler.stop()
    del model
    return summarise(latencies, tokens, params, peak)


def _measure_endpoint(spec: ModelSpec, prompts: Sequence[str], new_tokens: int) -> dict:
    import httpx

    from kdroute.bench.harness import unwrap_message

    headers = {"Authorization": f"Bearer {key}"} if (key := spec.api_key()) else {}
    latencies, tokens = [], 0
    with httpx.Client(timeout=spec.timeout_s, headers=headers) as client:
        for prompt in prompts:
            if spec.is_chat_endpoint:
                message = unwrap_message({"role": "user", "content": prompt})
                url, body = "/chat/completions", {"messages": [message]}
            else:
                url, body = "/completions", {"prompt": prompt}
            body.update(model=spec.api_model, max_tokens=new_tokens, temperature=0)
            start = time.perf_counter()
            try:
                response = client.post(spec.api_base + url, json=body)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise BackendError(f"{spec.role} endpoint {spec.api_base} failed during the "
                                   f"speed test: {type(exc).__name__}: {exc}") from None
            latencies.append(time.perf_counter() - start)
            tokens += _completion_tokens(response.json(), spec.is_chat_endpoint)
    return summarise(latencies, tokens, None, None)


def _completion_tokens(payload: dict, chat: bool) -> int:
    usage = payload.get("usage") or {}
    if isinstance(usage.get("completion_tokens"), int):
        return usage["completion_tokens"]
    choice = (payload.get("choices") or [{}])[0]  # no usage reported: count characters
    text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    return len(text or "")
