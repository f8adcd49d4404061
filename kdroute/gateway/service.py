"""The serving logic, apart from HTTP: route, call the back end with retries and fallback, cost
the answer, and hand the finished request record to the ledger writer, the metrics and listeners.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from kdroute.gateway.backends import Backend, RetryPolicy, UpstreamError, with_retries
from kdroute.gateway.costing import Prices, cost_usd
from kdroute.gateway.metrics import GatewayMetrics
from kdroute.gateway.protocol import GatewayError
from kdroute.gateway.records import RequestRecord, key_id
from kdroute.gateway.routing import Decision, RouteChoice, Router, decide

log = logging.getLogger("kdroute.gateway")
Listener = Callable[[RequestRecord], None]


@dataclass
class Target:
    """One role's back end with its prices and retry policy."""

    role: str
    backend: Backend
    prices: Prices
    policy: RetryPolicy
    timeout_s: float


@dataclass
class Stream:
    """An opened upstream stream: its first chunk (already received) and the rest."""

    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    role: str


class Gateway:
    def __init__(self, *, router: Router, targets: dict[str, Target], metrics: GatewayMetrics,
                 writer, api_keys: tuple[str, ...], store_text: bool,
                 request_timeout_s: float, secrets: tuple[str, ...] = ()):
        self.router = router
        self.targets = targets
        self.metrics = metrics
        self.writer = writer
        self.api_keys = api_keys
        self.store_text = store_text
        self.request_timeout_s = request_timeout_s
        self.secrets = tuple(s for s in (*api_keys, *secrets) if s)
        self.listeners: list[Listener] = []  # e.g. the monitor's shadow sampler
        self.breaker = None  # the monitor's quality breaker: `await breaker.guard(decision, ...)`

    # --- auth ---------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str | None:
        """The key id of a valid `Authorization: Bearer <key>`; 401 otherwise (None if no keys)."""
        if not self.api_keys:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError(401, "Missing API key: send `Authorization: Bearer <key>`",
                               type="authentication_error", code="missing_api_key")
        token_bytes = token.strip().encode()
        matched = None
        for key in self.api_keys:  # compare with every key, in constant time each
            if hmac.compare_digest(token_bytes, key.encode()):
                matched = key
        if matched is None:
            raise GatewayError(401, "Incorrect API key provided", type="authentication_error",
                               code="invalid_api_key")
        return key_id(matched)

    # --- routing ------------------------------------------------------------------------------

    async def decide(self, choice: RouteChoice, conversation: list[dict],
                     record: RequestRecord) -> Decision:
        # Scoring may run a model (embeddings); keep it off the event loop.
        decision = await asyncio.to_thread(decide, self.router, choice, conversation) \
            if choice.mode == "auto" else decide(self.router, choice, conversation)
        if self.breaker is not None:  # an open quality alert sends the student's share to the teacher
            decision = await self.breaker.guard(decision, conversation, record)
        record.route_reason = decision.reason
        record.router_score = decision.score
        record.threshold = decision.threshold
        record.router_version = getattr(self.router, "version", None)
        return decision

    # --- non-streaming ------------------------------------------------------------------------

    async def complete(self, endpoint: str, payload: dict, decision: Decision,
                       record: RequestRecord) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.request_timeout_s):
                role, response = await self._with_fallback(
                    decision.role, record,
                    lambda target: target.backend.complete(endpoint, payload))
        except TimeoutError:
            raise GatewayError(504, "the request took longer than request_timeout_s",
                               type="api_error", code="timeout") from None
        target = self.targets[role]
        response["model"] = target.backend.name
        usage = response.get("usage") or {}
        text = _response_text(response)
        self._cost(record, role, usage, payload, text)
        record.response_text = text
        return response

    async def _with_fallback(self, role: str, record: RequestRecord, call):
        try:
            result = await self._call(role, call)
        except UpstreamError as exc:
            if role != "student":
                raise upstream_to_gateway(exc) from None
            log.warning("student failed, falling back to the teacher: %s", exc.message)
            record.fallback = True
            record.route_reason = "fallback"
            record.error = exc.message
            role = "teacher"
            try:
                result = await self._call(role, call)
            except UpstreamError as exc:
                raise upstream_to_gateway(exc) from None
        record.served_role, record.served_model = role, self.targets[role].backend.name
        return role, result

    async def _call(self, role: str, call):
        target = self.targets[role]

        async def attempt():
            try:
                async with asyncio.timeout(target.timeout_s):
                    return await call(target)
            except TimeoutError:
                raise UpstreamError(None, f"{target.backend.name} timed out after "
                                          f"{target.timeout_s:g}s", timeout=True) from None

        return await with_retries(attempt, target.policy,
                                  on_retry=lambda exc: self.metrics.retries.labels(role).inc())

    # --- streaming ----------------------------------------------------------------------------

    async def open_stream(self, endpoint: str, payload: dict, decision: Decision,
                          record: RequestRecord) -> Stream:
        """Open the upstream stream and wait for its first chunk, so that failures before any
        byte reaches the client still fall back or become a proper HTTP error status."""
        payload = dict(payload, stream_options={"include_usage": True})

        async def first_chunk(target: Target):
            rest = target.backend.stream(endpoint, payload)
            try:
                return await anext(rest), rest
            except BaseException:
                await rest.aclose()
                raise
            # StopAsyncIteration cannot happen: back ends raise UpstreamError on an empty stream

        try:
            async with asyncio.timeout(self.request_timeout_s):
                role, (first, rest) = await self._with_fallback(decision.role, record, first_chunk)
        except TimeoutError:
            raise GatewayError(504, "no answer within request_timeout_s", type="api_error",
                               code="timeout") from None
        return Stream(first, rest, role)

    async def relay(self, stream: Stream, payload: dict, record: RequestRecord,
                    started: float) -> AsyncIterator[bytes]:
        """SSE bytes for the client. An upstream failure after the first byte becomes a final
        `data: {"error": ...}` event and `[DONE]`; a client disconnect cancels the upstream."""
        name = self.targets[stream.role].backend.name
        wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        pieces: list[str] = []
        usage: dict = {}
        chunk: dict | None = stream.first
        try:
            while chunk is not None:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.perf_counter() - started) * 1000
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not wants_usage:
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                pieces.append(_chunk_text(chunk))
                if chunk.get("choices") or wants_usage:
                    chunk["model"] = name
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                chunk = await anext(stream.rest, None)
        except UpstreamError as exc:
            err = upstream_to_gateway(exc)
            record.status, record.error = err.status, err.message
            yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.error = 499, "client disconnected"
            raise
        finally:
            await stream.rest.aclose()
            text = "".join(pieces)
            record.response_text = text
            self._cost(record, stream.role, usage, payload, text)
            self.finish(record, started)
        yield b"data: [DONE]\n\n"

    # --- accounting ---------------------------------------------------------------------------

    def _cost(self, record: RequestRecord, role: str, usage: dict, payload: dict,
              text: str) -> None:
        record.served_role = role
        record.served_model = self.targets[role].backend.name
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if prompt_tokens is None:  # a back end that reports no usage: ~4 characters per token
            prompt_tokens = len(json.dumps(payload.get("messages") or payload.get("prompt"))) // 4
        if completion_tokens is None:
            completion_tokens = (len(text) + 3) // 4
        record.prompt_tokens = int(prompt_tokens)
        record.completion_tokens = int(completion_tokens)
        record.cost_usd = cost_usd(self.targets[role].prices, record.prompt_tokens,
                                   record.completion_tokens)
        record.teacher_cost_usd = cost_usd(self.targets["teacher"].prices, record.prompt_tokens,
                                           record.completion_tokens)

    async def abandon(self, stream: Stream, record: RequestRecord, started: float) -> None:
        """The client left before the relay ever ran: close the upstream, log the request."""
        if not record.logged:
            await stream.rest.aclose()
            record.status, record.error = 499, "client disconnected"
            self.finish(record, started)

    def finish(self, record: RequestRecord, started: float) -> None:
        """Log the request once: ledger row (enqueued, never blocking), metrics, listeners."""
        if record.logged:
            return
        record.logged = True
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.writer.put(record.row(self.store_text, self.secrets))
        self.metrics.observe(record)
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # a listener must never break serving
                log.exception("request listener failed")

    async def ready(self) -> dict[str, bool]:
        roles = list(self.targets)
        checks = await asyncio.gather(*(self.targets[r].backend.ready() for r in roles))
        return dict(zip(roles, checks, strict=True))

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.backend.aclose()


def upstream_to_gateway(exc: UpstreamError) -> GatewayError:
    """Map a back-end failure to what the client sees: 504 timeout, 503 overloaded, 502 broken,
    and the back end's own 4xx (bad request) passed through, except auth errors, which are ours."""
    if exc.timeout:
        return GatewayError(504, exc.message, type="api_error", code="upstream_timeout")
    if exc.status in (429, 503):
        return GatewayError(503, exc.message, type="api_error", code="upstream_unavailable")
    if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403):
        return GatewayError(exc.status, exc.message, type="invalid_request_error",
                            code="upstream_rejected")
    return GatewayError(502, exc.message, type="api_error", code="upstream_error")


def _response_text(response: dict) -> str:
    choices = response.get("choices") or [{}]
    first = choices[0]
    if "message" in first:
        return (first["message"] or {}).get("content") or ""
    return first.get("text") or ""


def _chunk_text(chunk: dict) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    if "delta" in first:
        return (first["delta"] or {}).get("content") or ""
    return first.get("text") or ""

