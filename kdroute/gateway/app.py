"""The HTTP edge: an app factory, the OpenAI routes, and every error mapped in one place.

State lives on `app.state.gateway` (built by `create_app`), never in module globals, so tests and
several workers each get their own router, back ends, writer and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kdroute.config import Settings, load_config
from kdroute.errors import ConfigError
from kdroute.gateway.backends import RetryPolicy, build_backend
from kdroute.gateway.costing import resolve_prices
from kdroute.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from kdroute.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GatewayError,
    conversation_of,
    error_body,
    model_list,
    validate_request,
)
from kdroute.gateway.records import RequestRecord, new_request_id, redact
from kdroute.gateway.routing import MODEL_IDS, ROLES, ROUTE_HEADER, Router, choose_route
from kdroute.gateway.service import Gateway, Listener, Target
from kdroute.monitor.service import build_monitor
from kdroute.store import BatchedWriter, Store

log = logging.getLogger("kdroute.gateway")
STARTED = int(time.time())


def read_api_keys(settings: Settings, env=None) -> tuple[str, ...]:
    """Client keys from the variable named by `gateway.api_keys_env` (comma-separated)."""
    env = os.environ if env is None else env
    raw = env.get(settings.gateway.api_keys_env, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def check_bind(settings: Settings, api_keys: tuple[str, ...]) -> None:
    """Without client keys the gateway only listens on loopback, unless explicitly allowed."""
    host = settings.gateway.host
    if api_keys or settings.gateway.allow_public_without_key or _is_loopback(host):
        return
    raise ConfigError(f"gateway.host: {host!r} is reachable from other machines but no API key "
                      f"is set; set {settings.gateway.api_keys_env} or "
                      "gateway.allow_public_without_key = true")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, *, router: Router | None = None,
               listeners: Iterable[Listener] = (), env=None) -> FastAPI:
    """Build the gateway: router (loaded from config unless injected), back ends, ledger writer,
    metrics. Configuration problems raise ConfigError here, before any port is bound."""
    if router is None:
        from kdroute.route import load_router

        router = load_router(settings)
    gw_cfg = settings.gateway
    ledger = settings.path(settings.store.path)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512,
                                                   max_keepalive_connections=128))
    targets = {}
    for role in ROLES:
        model = getattr(settings, role)
        targets[role] = Target(
            role, build_backend(role, model, settings, client), resolve_prices(role, model),
            RetryPolicy(model.max_retries, gw_cfg.retry_backoff_s, gw_cfg.retry_max_wait_s),
            model.timeout_s)
    Store(ledger, settings.store.busy_timeout_ms).close()  # migrate now; fail before serving
    writer = BatchedWriter(str(ledger), queue_size=gw_cfg.writer_queue_size,
                           batch_size=gw_cfg.writer_batch_size,
                           flush_interval_s=gw_cfg.writer_flush_interval_s,
                           busy_timeout_ms=settings.store.busy_timeout_ms)
    provider_keys = tuple(os.environ.get(getattr(settings, r).api_key_env or "", "")
                          for r in ROLES)
    gateway = Gateway(router=router, targets=targets, metrics=GatewayMetrics(writer),
                      writer=writer, api_keys=read_api_keys(settings, env),
                      store_text=gw_cfg.store_text, request_timeout_s=gw_cfg.request_timeout_s,
                      secrets=provider_keys)
    monitor = build_monitor(settings, targets, gateway.metrics.registry, router=router,
                            client=client, redact=lambda text: redact(text, gateway.secrets))
    gateway.breaker = monitor.breaker
    gateway.listeners.append(monitor.on_request)
    gateway.listeners.extend(listeners)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        writer.start()
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            await gateway.aclose()
            await client.aclose()
            await asyncio.to_thread(writer.close)

    app = FastAPI(title="kdroute gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gateway
    app.state.monitor = monitor
    app.state.settings = settings
    _add_error_handlers(app)
    _add_routes(app)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for `kdroute serve --workers N`: each worker process builds its own app
    from $KDROUTE_CONFIG and KDROUTE_<SECTION>_<KEY> overrides."""
    return create_app(load_config())


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = (f"Unknown request URL: {request.method} {request.url.path}"
                   if exc.status_code == 404 else str(exc.detail))
        return JSONResponse(error_body(message, "invalid_request_error", None,
                                       "unknown_url" if exc.status_code == 404 else None),
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body("invalid request", "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__,
                  exc_info=exc)
        return JSONResponse(error_body("The gateway had an internal error; it has been logged.",
                                       "server_error", None, "internal_error"), 500)


def _add_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await serve(request, "chat", ChatCompletionRequest)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await serve(request, "completions", CompletionRequest)

    @app.get("/v1/models")
    async def models(request: Request):
        request.app.state.gateway.authenticate(request.headers.get("authorization"))
        return model_list(list(MODEL_IDS), STARTED)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request):
        backends = await request.app.state.gateway.ready()
        if all(backends.values()):
            return {"status": "ready", "backends": backends}
        down = ", ".join(role for role, ok in backends.items() if not ok)
        body = error_body(f"not ready: {down} unreachable", "api_error", None, "not_ready")
        return JSONResponse(dict(body, backends=backends), status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(request.app.state.gateway.metrics.render(), media_type=CONTENT_TYPE)


async def serve(request: Request, endpoint: str, schema) -> Response:
    """One completion request, from raw bytes to the answer, logged whatever happens."""
    gw: Gateway = request.app.state.gateway
    started = time.perf_counter()
    record = RequestRecord(id=new_request_id(), endpoint=endpoint)
    try:
        record.key_id = gw.authenticate(request.headers.get("authorization"))
        raw = await read_json(request, request.app.state.settings.gateway.max_body_bytes)
        body = validate_request(schema, raw)
        record.requested_model, record.stream = body.model, body.stream
        record.conversation = conversation_of(body)
        choice = choose_route(body.model, request.headers.get(ROUTE_HEADER))
        decision = await gw.decide(choice, record.conversation, record)
        payload = {k: v for k, v in raw.items() if k != "model"}
        if body.stream:
            stream = await until_disconnect(
                request, gw.open_stream(endpoint, payload, decision, record))
            return RelayResponse(gw.relay(stream, payload, record, started),
                                 on_close=lambda: gw.abandon(stream, record, started),
                                 media_type="text/event-stream", headers=route_headers(record))
        answer = await until_disconnect(request, gw.complete(endpoint, payload, decision, record))
        gw.finish(record, started)
        return JSONResponse(answer, headers=route_headers(record))
    except GatewayError as exc:
        record.status, record.error = exc.status, exc.message
        exc.headers["x-kdroute-request-id"] = record.id
        gw.finish(record, started)
        raise
    except ClientGone:
        record.status, record.error = 499, "client disconnected"
        gw.finish(record, started)
        return Response(status_code=499)
    except Exception as exc:
        record.status, record.error = 500, f"internal error: {type(exc).__name__}"
        gw.finish(record, started)
        raise


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


async def read_json(request: Request, limit: int):
    """The decoded body: 413 past `limit` bytes (checked while reading), 400 if not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "We could not parse the JSON body of your request.",
                           code="invalid_json") from None


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than {limit} bytes (gateway.max_body_bytes)",
                        code="request_too_large")


class RelayResponse(StreamingResponse):
    """A streaming response that always closes its relay, even when the client disconnects
    before the first byte (Starlette would then never start, hence never close, the generator)."""

    def __init__(self, content, *, on_close, **kwargs):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            await self._on_close()


class ClientGone(Exception):
    """The client hung up before the answer was ready."""


async def until_disconnect(request: Request, coro):
    """Await `coro`, but cancel it (the back-end call with it) if the client disconnects."""
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
