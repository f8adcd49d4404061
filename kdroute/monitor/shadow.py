"""Background evaluations: a sampled request answered again by the other model, off the request
path, and the pair scored and written to the ledger.

- `shadow`: the student answered the client; the teacher answers the same conversation.
- `probe`: the breaker sent the request to the teacher; the student answers it, so the monitor
  keeps measuring the student while it is benched.

A job is queued only after the client's answer is complete (from the gateway's finish hook) and
runs as an asyncio task: a bounded queue (overflow dropped and counted), `concurrency` calls in
flight at most, and a daily USD budget shared by all workers through the ledger. The call is
built here from the conversation alone, with fixed, safe sampling parameters (temperature 0,
`shadow_max_tokens`) and the configured back end: nothing the client sent can redirect it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kdroute.monitor.agreement import AgreementScorer, Pair

log = logging.getLogger("kdroute.monitor")


@dataclass
class Job:
    kind: str  # shadow | probe
    request_id: str
    endpoint: str  # chat | completions
    conversation: list[dict[str, str]]  # role + text content only
    prompt: str  # the conversation flattened (what routers and distillation read)
    answer: str  # what the client got
    served_model: str
    inclusion_prob: float
    estimated_cost: float
    router_score: float | None = None
    threshold: float | None = None
    router_version: str | None = None
    slice: str = "all"
    queued_at: float = field(default_factory=time.monotonic)


def utc_midnight() -> str:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today.isoformat(timespec="milliseconds")


class DailyBudget:
    """USD per UTC day for all workers: the ledger's total at the last poll, plus what this worker
    spent on rows not yet flushed into it, plus reservations for the calls in flight."""

    def __init__(self, limit_usd: float):
        self.limit = limit_usd
        self.ledger_spent = 0.0
        self.local_spent = 0.0
        self.reserved = 0.0
        self._lock = threading.Lock()  # the ledger thread takes snapshots, the event loop spends

    def snapshot(self, ledger_spent: float, flushed: float) -> None:
        """The ledger's total, read right after this worker flushed rows costing `flushed`."""
        with self._lock:
            self.ledger_spent = ledger_spent
            self.local_spent = max(0.0, self.local_spent - flushed)

    def spend(self, cost: float) -> None:
        with self._lock:
            self.local_spent += cost

    @property
    def spent(self) -> float:
        return self.ledger_spent + self.local_spent

    def reserve(self, estimate: float) -> bool:
        with self._lock:
            if self.ledger_spent + self.local_spent + self.reserved + estimate > self.limit:
                return False
            self.reserved += estimate
            return True

    def release(self, estimate: float) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - estimate)


class ShadowRunner:
    def __init__(self, *, targets: dict, scorer: AgreementScorer, ledger, budget: DailyBudget,
                 metrics, queue_size: int, concurrency: int, max_tokens: int,
                 store_pairs: bool, redact, run_blocking):
        self.targets = targets
        self.scorer = scorer
        self.ledger = ledger
        self.budget = budget
        self.metrics = metrics
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.store_pairs = store_pairs
        self.redact = redact  # text -> text with secrets removed
        self.run_blocking = run_blocking  # runs the encoder off the event loop
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task] = []

    def submit(self, job: Job) -> bool:
        """Queue a job without waiting; a full queue drops it (counted)."""
        self.metrics.sampled.labels(job.kind).inc()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.dropped.labels(job.kind, "queue_full").inc()
            return False
        self.metrics.queue_depth.set(self.queue.qsize())
        return True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"kdroute-shadow-{i}")
                         for i in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        while not self.queue.empty():
            job = self.queue.get_nowait()
            self.metrics.dropped.labels(job.kind, "shutdown").inc()
        self._workers = []

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.metrics.queue_depth.set(self.queue.qsize())
            try:
                await self.run(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad job must not stop the worker
                self.metrics.failed.labels(job.kind, "internal").inc()
                log.exception("background evaluation of %s failed", job.request_id)

    async def run(self, job: Job) -> dict | None:
        """Call the other model, score the pair, write the row. Returns the row written."""
        if not self.budget.reserve(job.estimated_cost):
            self.metrics.dropped.labels(job.kind, "budget").inc()
            return None
        try:  # the reservation is held until the real cost is in the budget
            return await self._evaluate(job)
        finally:
            self.budget.release(job.estimated_cost)

    async def _evaluate(self, job: Job) -> dict:
        role = "teacher" if job.kind == "shadow" else "student"
        target = self.targets[role]
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            response = await self._call(target, job)
        except Exception as exc:  # any back-end failure is a counted failure, never the client's
            self.metrics.failed.labels(job.kind, "upstream").inc()
            row = self._row(job, target, None, 0.0, started, error=_describe(exc))
            await self._write(job, row, 0.0)
            return row
        finally:
            self.metrics.in_flight.dec()
        text, cost = _answer_and_cost(response, target.prices, job.prompt)
        student, teacher = (job.answer, text) if job.kind == "shadow" else (text, job.answer)
        try:
            verdict = (await self.scorer.score([Pair(job.prompt, student, teacher)],
                                               self.run_blocking))[0]
        except Exception as exc:
            self.metrics.failed.labels(job.kind, "scoring").inc()
            row = self._row(job, target, text, cost, started, error=_describe(exc))
            await self._write(job, row, cost)
            return row
        if verdict.error:
            self.metrics.failed.labels(job.kind, "judge").inc()
        row = self._row(job, target, text, cost, started, verdict=verdict)
        await self._write(job, row, cost + verdict.judge_cost_usd)
        self.metrics.evaluated.labels(job.kind, verdict.method, str(verdict.verdict)).inc()
        return row

    async def _call(self, target, job: Job) -> dict[str, Any]:
        if job.endpoint == "completions":
            payload: dict[str, Any] = {"prompt": job.conversation[-1]["content"]}
        else:
            payload = {"messages": job.conversation}
        payload.update(max_tokens=self.max_tokens, temperature=0)
        async with asyncio.timeout(target.timeout_s):
            return await target.backend.complete(job.endpoint, payload)

    def _row(self, job: Job, target, text: str | None, cost: float, started: float, *,
             verdict=None, error: str | None = None) -> dict[str, Any]:
        shadow = job.kind == "shadow"
        other_model = target.backend.name
        row = {
            "request_id": job.request_id, "kind": job.kind,
            "status": "ok" if error is None else "failed",
            "error": self.redact(error) if error else None,
            "teacher_model": other_model if shadow else job.served_model,
            "student_model": job.served_model if shadow else other_model,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "teacher_cost_usd": cost if shadow else 0.0,
            "student_cost_usd": 0.0 if shadow else cost,
            "judge_cost_usd": verdict.judge_cost_usd if verdict is not None else 0.0,
            "inclusion_prob": job.inclusion_prob, "router_score": job.router_score,
            "threshold": job.threshold, "router_version": job.router_version, "slice": job.slice,
        }
        if verdict is not None:
            row.update(method=verdict.method, score=verdict.score, verdict=verdict.verdict,
                       agreement=None if verdict.verdict is None else float(verdict.verdict))
            if verdict.error:
                row["error"] = self.redact(verdict.error)
        if self.store_pairs:
            student, teacher = (job.answer, text) if shadow else (text, job.answer)
            row.update(prompt_text=self.redact(job.prompt), student_response=self.redact(student),
                       teacher_response=self.redact(teacher))
        return row

    async def _write(self, job: Job, row: dict, cost: float) -> None:
        """Hand the row to the ledger (written with the next poll, in one transaction)."""
        self.metrics.cost.labels(job.kind).inc(cost)
        self.ledger.add_shadow(row, cost)


def _answer_and_cost(response: dict, prices, prompt: str) -> tuple[str, float]:
    choices = response.get("choices") or [{}]
    first = choices[0] or {}
    text = ((first.get("message") or {}).get("content") if "message" in first
            else first.get("text")) or ""
    usage = response.get("usage") or {}
    # a back end that reports no usage: ~4 characters per token, as the gateway estimates
    prompt_tokens = int(usage.get("prompt_tokens") or (len(prompt) + 3) // 4)
    completion_tokens = usage.get("completion_tokens")
    completion_tokens = int(completion_tokens) if completion_tokens is not None \
        else (len(text) + 3) // 4
    cost = (prompt_tokens * prices.input_per_1m + completion_tokens * prices.output_per_1m) / 1e6
    return text, cost


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        message = "timed out"
    return f"{type(exc).__name__}: {message}"[:300]
