"""The serving logic, apart from HTTP: one call, `Gateway.handle`, takes a request from raw bytes
to an answer or a stream: decode and validate, route, call the back end with retries and
fallback, cost the answer, and hand the finished request record to the ledger writer, the
metrics and listeners. Every failure becomes an OpenAI-shaped answer here, logged once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdroute.gateway.backends import Backend, RetryPolicy, with_retries
from kdroute.gateway.costing import Prices, cost_usd
from kdroute.gateway.errors import UpstreamError
from kdroute.gateway.metrics import GatewayMetrics
from kdroute.gateway.protocol import (
    SCHEMAS,
    GatewayError,
    client_payload,
    conversation_of,
    decode_json,
    dumps,
    error_body,
    validate_request,
)
from kdroute.gateway.records import RequestRecord, key_id, new_request_id
from kdroute.gateway.redaction import redact
from kdroute.gateway.routing import (
    ROUTE_HEADER,
    Decision,
    RouteChoice,
    Router,
    choose_route,
    decide,
)

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


@dataclass
class Incoming:
    """What the HTTP layer hands `Gateway.handle`: the body (read on demand, bounded), the
    headers the gateway reads, the authenticated key id, and a wait for the client leaving."""

    endpoint: str  # chat | completions
    body: Callable[[], Awaitable[bytes]]  # raises GatewayError (413) or ClientGone
    client_gone: Callable[[], asyncio.Future]  # after the body: done once the client hangs up
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    key_id: str | None = None


@dataclass
class Answer:
    """A whole JSON answer (or error) with its status and headers; body None: nothing to send."""

    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]

    def content(self) -> bytes:
        return b"" if self.body is None else dumps(self.body)


@dataclass
class StreamAnswer:
    """An SSE stream: `chunks` to relay; `close` runs however the response ends."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]
    close: Callable[[], Awaitable[None]]


class ClientGone(Exception):
    """The client hung up before the answer was ready."""


class Gateway:
    def __init__(self, *, router: Router, targets: dict[str, Target], metrics: GatewayMetrics,
                 writer, api_keys: tuple[str, ...], store_text: bool,
                 request_timeout_s: float, secrets: tuple[str, ...] = (),
                 extra_fields: Iterable[str] = ()):
        self.router = router
        self.targets = targets
        self.metrics = metrics
        self.writer = writer
        self.api_keys = api_keys
        self.store_text = store_text
        self.request_timeout_s = request_timeout_s
        self.secrets = tuple(s for s in (*api_keys, *secrets) if s)
        self.extra_fields = frozenset(extra_fields)
        self.listeners: list[Listener] = []  # e.g. the monitor's shadow sampler
        # Score on the event loop when a fresh score is cheap (measured by `warm`): a thread hop
        # costs more than a sub-millisecond score. Embedding scorers stay in a thread.
        self.inline_scoring = False
        self.breaker = None  # the monitor's quality breaker: `await breaker.guard(decision, ...)`

    # --- the one serving call -----------------------------------------------------------------

    async def handle(self, incoming: Incoming) -> Answer | StreamAnswer:
        """One completion request, from raw bytes to the answer, logged whatever happens."""
        started = time.perf_counter()
        record = RequestRecord(id=new_request_id(), endpoint=incoming.endpoint,
                               key_id=incoming.key_id)
        self.writer.begin({"id": record.id, "ts": record.ts, "endpoint": record.endpoint,
                           "key_id": record.key_id, "route_reason": record.route_reason})
        try:
            return await self._serve(incoming, record, started)
        except GatewayError as exc:
            return self.fail(record, started, exc)
        except ClientGone:
            record.status, record.error = 499, "client disconnected"
            self.finish(record, started)
            return Answer(499, None, {"x-kdroute-request-id": record.id})
        except Exception as exc:
            log.error("unexpected error in request %s: %s", record.id, type(exc).__name__,
                      exc_info=exc)
            return self.fail(record, started, GatewayError(
                500, "The gateway had an internal error; it has been logged.", "server_error",
                code="internal_error"), error=f"internal error: {type(exc).__name__}")

    async def _serve(self, incoming: Incoming, record: RequestRecord,
                     started: float) -> Answer | StreamAnswer:
        endpoint = incoming.endpoint
        check_content_type(incoming.headers.get("content-type"))
        raw = decode_json(await incoming.body())
        if isinstance(raw, dict) and isinstance(raw.get("model"), str):
            record.requested_model = raw["model"]
        request = validate_request(SCHEMAS[endpoint], raw)
        record.stream = request.stream
        payload = record.payload = client_payload(endpoint, raw, self.extra_fields)
        record.conversation = raw["messages"] if endpoint == "chat" else conversation_of(request)
        choice = choose_route(request.model, incoming.headers.get(ROUTE_HEADER))
        decision = await self.decide(choice, record.conversation, record)
        if request.stream:
            stream = await until_disconnect(
                incoming.client_gone(), self.open_stream(endpoint, payload, decision, record))
            return StreamAnswer(self.relay(stream, payload, record, started), route_headers(record),
                                lambda: self.abandon(stream, record, started))
        answer = await until_disconnect(incoming.client_gone(),
                                        self.complete(endpoint, payload, decision, record))
        self.finish(record, started)
        return Answer(200, answer, route_headers(record))

    def fail(self, record: RequestRecord, started: float, exc: GatewayError,
             error: str | None = None) -> Answer:
        """Log a failed request once and answer it OpenAI-shaped, with its request id."""
        record.status, record.error = exc.status, error or exc.message
        self.finish(record, started)
        return Answer(exc.status, exc.body(), {**exc.headers, "x-kdroute-request-id": record.id})

    def reject(self, endpoint: str, exc: GatewayError) -> Answer:
        """A completion request refused before `handle` (authentication): logged like any other."""
        return self.fail(RequestRecord(id=new_request_id(), endpoint=endpoint),
                         time.perf_counter(), exc)

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
        # A slow scorer (an embedding model) runs in a thread, off the event loop.
        if choice.mode != "auto" or self.inline_scoring:
            decision = decide(self.router, choice, conversation)
        else:
            decision = await asyncio.to_thread(decide, self.router, choice, conversation)
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
            log.warning("student failed, falling back to the teacher: %s",
                        redact(exc.message, self.secrets))
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
        `data: {"error": ...}` event and `[DONE]`; a client disconnect cancels the upstream.
        The status stays the 200 the client saw; `stream_outcome` says how the stream ended."""
        name = self.targets[stream.role].backend.name
        wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        pieces: list[str] = []
        usage: dict = {}
        chunk: dict | None = stream.first
        record.stream_outcome = "completed"
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
                    yield b"data: " + dumps(chunk) + b"\n\n"
                chunk = await anext(stream.rest, None)
        except UpstreamError as exc:
            err = upstream_to_gateway(exc)
            record.stream_outcome = "upstream_error"
            record.error = f"{err.status} {err.code}: {err.message}"
            yield b"data: " + dumps(err.body()) + b"\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            record.stream_outcome, record.error = "client_disconnected", "client disconnected"
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
            record.stream_outcome = "client_disconnected"
            self.finish(record, started)

    def finish(self, record: RequestRecord, started: float) -> None:
        """Log the request once: ledger row (enqueued, never blocking), metrics, listeners."""
        if record.logged:
            return
        record.logged = True
        record.latency_ms = (time.perf_counter() - started) * 1000
        try:
            row = record.row(self.store_text, self.secrets)
        except Exception:  # never lose the row: keep what is certain, say what failed
            log.exception("request %s: its ledger row could not be built", record.id)
            row = RequestRecord(id=record.id, endpoint=record.endpoint, ts=record.ts,
                                status=record.status if record.status != 200 else 500,
                                error="the gateway could not build this row").row(False)
        self.writer.put(row)
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

    async def warm(self) -> None:
        """Before the first request: load the redaction patterns, import/load each back end's
        provider (litellm takes seconds to import: never on the event loop mid-traffic), score
        a few prompts to warm the router and decide whether scoring can run on the loop."""
        from kdroute.gateway import redaction

        await asyncio.to_thread(redaction.warm)
        for target in self.targets.values():
            await target.backend.warm()
        self.inline_scoring = await asyncio.to_thread(_cheap_to_score, self.router)

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.backend.aclose()


def _cheap_to_score(router: Router, budget_ms: float = 1.0) -> bool:
    """True when a fresh (uncached) score takes under `budget_ms` of CPU at the median. The
    process's CPU time (a scorer's own worker threads count; nothing else runs before serving),
    not wall time: a gateway starting on a busy machine waits for a core, and that wait says
    nothing about what scoring on the loop would cost."""
    timings = []
    for i in range(7):
        probe = [{"role": "user", "content": f"kdroute warm-up probe {i} {time.time_ns()}"}]
        t0 = time.process_time()
        try:
            router.route(probe)
        except Exception:  # a router that cannot score a probe: let real requests show it
            log.exception("the router failed on a warm-up prompt")
            return False
        timings.append((time.process_time() - t0) * 1000)
    return statistics.median(timings[1:]) < budget_ms


def check_content_type(value: str | None) -> None:
    """JSON bodies only: `application/json` (any charset) or a `+json` type; none is accepted
    (curl without -H, many scripts)."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return
    raise GatewayError(415, f"Content-Type {value[:80]!r} is not supported: send the body as "
                            "JSON with `Content-Type: application/json`",
                       code="unsupported_media_type")


async def until_disconnect(gone: asyncio.Future, coro):
    """Await `coro` in this task; if the client disconnects first (`gone` is done), cancel it,
    and the back-end call with it, and raise ClientGone. No task of its own: `gone`'s
    done-callback cancels this one. A watcher task standing in for `gone` ends with the wait."""
    task = asyncio.current_task()
    if gone.done():
        coro.close()
        raise ClientGone
    waiting, cancelled = True, False

    def on_gone(_: asyncio.Future) -> None:  # runs a loop turn after `gone` is done
        nonlocal cancelled
        if waiting and not gone.cancelled():  # not once `coro` has returned meanwhile
            cancelled = True
            task.cancel()

    gone.add_done_callback(on_gone)
    try:
        return await coro
    except asyncio.CancelledError:
        if not cancelled:
            raise
        task.uncancel()
        raise ClientGone from None
    finally:
        waiting = False
        gone.remove_done_callback(on_gone)
        if isinstance(gone, asyncio.Task):
            gone.cancel()


def route_headers(record: RequestRecord) -> dict[str, str]:
    headers = {"x-kdroute-request-id": record.id,
               "x-kdroute-served-model": record.served_model or "",
               "x-kdroute-route-reason": record.route_reason}
    if record.router_score is not None:
        headers["x-kdroute-score"] = f"{record.router_score:.6f}"
    if record.threshold is not None:
        headers["x-kdroute-threshold"] = f"{record.threshold:.6f}"
    if record.slice is not None:
        headers["x-kdroute-slice"] = record.slice
    if record.route_reason == "breaker":  # the monitor's quality breaker chose the teacher
        headers["x-kdroute-breaker"] = "open"
    return headers


def internal_error_body() -> dict[str, Any]:
    return error_body("The gateway had an internal error; it has been logged.", "server_error",
                      None, "internal_error")


def upstream_to_gateway(exc: UpstreamError) -> GatewayError:
    """Map a back-end failure to what the client sees: 504 timeout, 503 overloaded, 502 broken,
    and the back end's own 4xx (bad request) passed through, except auth errors, which are ours."""
    if exc.timeout:
        return GatewayError(504, exc.message, type="api_error", code="upstream_timeout")
    if exc.status in (429, 503):
        # Tell the client when to come back: the back end's own retry-after, else a second.
        wait = max(1, math.ceil(exc.retry_after)) if exc.retry_after is not None else 1
        return GatewayError(503, exc.message, type="api_error", code="upstream_unavailable",
                            headers={"retry-after": str(wait)})
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

