"""The HTTP edge: an app factory, the OpenAI routes, authentication, and every error mapped in
one place.

State lives on `app.state.gateway` (built by `create_app`), never in module globals, so tests and
several workers each get their own router, back ends, writer and metrics. vLLM's entry-point
shape: each route takes the serving object from `app.state` and awaits one call,
`Gateway.handle(...)`, which returns an answer or a stream; authentication is one middleware.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kdroute.config import Settings, load_config
from kdroute.errors import ConfigError
from kdroute.gateway.backends import RetryPolicy, build_backend
from kdroute.gateway.costing import resolve_prices
from kdroute.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from kdroute.gateway.protocol import FORBIDDEN_FIELDS, GatewayError, error_body, model_list
from kdroute.gateway.redaction import install_log_redaction, redact
from kdroute.gateway.routing import MODEL_IDS, ROLES, Router
from kdroute.gateway.server import CLIENT_GONE
from kdroute.gateway.service import (
    Answer,
    ClientGone,
    Gateway,
    Incoming,
    Listener,
    StreamAnswer,
    Target,
    internal_error_body,
)
from kdroute.gateway.upstream import UpstreamClient
from kdroute.monitor.service import build_monitor
from kdroute.store import BatchedWriter, Store

log = logging.getLogger("kdroute.gateway")
STARTED = int(time.time())
COMPLETION_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
OPEN_PATHS = frozenset({"/health"})  # liveness only: says nothing about traffic or back ends
PROBE_PATHS = frozenset({"/metrics", "/ready"})  # open on loopback with the config switch


def read_api_keys(settings: Settings, env=None) -> tuple[str, ...]:
    """Client keys from the variable named by `gateway.api_keys_env` (comma-separated)."""
    env = os.environ if env is None else env
    raw = env.get(settings.gateway.api_keys_env, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def check_bind(settings: Settings, api_keys: tuple[str, ...]) -> None:
    """Without client keys the gateway only listens on loopback, unless explicitly allowed."""
    host = settings.gateway.host
    if api_keys or settings.gateway.allow_public_without_key or is_loopback(host):
        return
    raise ConfigError(f"gateway.host: {host!r} is reachable from other machines but no API key "
                      f"is set; set {settings.gateway.api_keys_env} or "
                      "gateway.allow_public_without_key = true")


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
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
    client = UpstreamClient()  # every outbound call: back ends, judge, alert webhook
    extra = frozenset(gw_cfg.extra_body_fields)
    if forbidden := sorted(extra & FORBIDDEN_FIELDS):
        raise ConfigError(f"gateway.extra_body_fields: {forbidden[0]!r} can never be set by a "
                          "client (it would change where a call goes or what it carries)")
    targets = {}
    for role in ROLES:
        model = getattr(settings, role)
        targets[role] = Target(
            role, build_backend(role, model, settings, client, extra),
            resolve_prices(role, model),
            RetryPolicy(model.max_retries, gw_cfg.retry_backoff_s, gw_cfg.retry_max_wait_s),
            model.timeout_s)
    Store(ledger, settings.store.busy_timeout_ms).close()  # migrate now; fail before serving
    writer = BatchedWriter(str(ledger), queue_size=gw_cfg.writer_queue_size,
                           batch_size=gw_cfg.writer_batch_size,
                           flush_interval_s=gw_cfg.writer_flush_interval_s,
                           busy_timeout_ms=settings.store.busy_timeout_ms,
                           spool_dir=f"{ledger}.spool" if gw_cfg.spool else None)
    provider_keys = tuple(os.environ.get(getattr(settings, r).api_key_env or "", "")
                          for r in ROLES)
    gateway = Gateway(router=router, targets=targets, metrics=GatewayMetrics(writer),
                      writer=writer, api_keys=read_api_keys(settings, env),
                      store_text=gw_cfg.store_text, request_timeout_s=gw_cfg.request_timeout_s,
                      secrets=provider_keys, extra_fields=extra)
    monitor = build_monitor(settings, targets, gateway.metrics.registry, router=router,
                            client=client, redact=lambda text: redact(text, gateway.secrets))
    gateway.breaker = monitor.breaker
    gateway.listeners.append(monitor.on_request)
    gateway.listeners.extend(listeners)
    install_log_redaction(gateway.secrets)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        writer.start()  # replays the spool of a process that died, if any
        await gateway.warm()  # uvicorn listens only once this is done
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
    app.router.redirect_slashes = False  # `/v1/models/` is a 404 like any unknown URL, not a 307
    app.state.gateway = gateway
    app.state.monitor = monitor
    app.state.settings = settings
    app.add_middleware(CompletionEndpoints, gateway=gateway)  # inside auth: after it
    app.add_middleware(AuthMiddleware, gateway=gateway,
                       open_probes_on_loopback=gw_cfg.loopback_probes_without_key)
    _add_error_handlers(app)
    _add_routes(app)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for `kdroute serve --workers N`: each worker process builds its own app
    from $KDROUTE_CONFIG and KDROUTE_<SECTION>_<KEY> overrides."""
    return create_app(load_config())


class AuthMiddleware:
    """Every path but /health needs a client key when keys are configured (/metrics and /ready
    too: they expose traffic, costs and back-end reachability), except /metrics and /ready from
    loopback when `gateway.loopback_probes_without_key` is on (a local scraper). A refused
    completion request is logged in the ledger like any other. Pure ASGI: no per-request task."""

    def __init__(self, app, gateway: Gateway, open_probes_on_loopback: bool = False):
        self.app = app
        self.gateway = gateway
        self.open_probes_on_loopback = open_probes_on_loopback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.gateway.api_keys:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS or (path in PROBE_PATHS and self.open_probes_on_loopback
                                  and is_loopback((scope.get("client") or ("",))[0])):
            return await self.app(scope, receive, send)
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            key = self.gateway.authenticate(authorization)
        except GatewayError as exc:
            endpoint = COMPLETION_PATHS.get(path)
            answer = (self.gateway.reject(endpoint, exc) if endpoint and scope["method"] == "POST"
                      else Answer(exc.status, exc.body(), {}))
            return await to_response(answer)(scope, receive, send)
        scope.setdefault("state", {})["key_id"] = key
        await self.app(scope, receive, send)


class CompletionEndpoints:
    """The two hot routes, POST /v1/chat/completions and /v1/completions, straight into
    `Gateway.handle`: no framework routing, dependency solving or per-route exception stack
    (issue 14's profile put a fifth of the gateway's CPU there). `handle` answers every error
    itself; anything that still escapes meets the catch-all handler (an OpenAI-shaped 500):
    Starlette's ServerErrorMiddleware wraps every middleware.
    Other methods and paths go on to FastAPI (405, 404, the other routes), unchanged."""

    def __init__(self, app, gateway: Gateway):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope, receive, send) -> None:
        endpoint = COMPLETION_PATHS.get(scope.get("path")) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        answer = await self.gateway.handle(incoming(Request(scope, receive), endpoint))
        await to_response(answer)(scope, receive, send)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = (f"Unknown request URL: {request.method} {request.url.path[:200]}"
                   if exc.status_code == 404 else str(exc.detail))
        return JSONResponse(error_body(message, "invalid_request_error", None,
                                       "unknown_url" if exc.status_code == 404 else None),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body("invalid request", "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__,
                  exc_info=exc)
        return JSONResponse(internal_error_body(), 500)


def _add_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return to_response(await request.app.state.gateway.handle(incoming(request, "chat")))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return to_response(await request.app.state.gateway.handle(
            incoming(request, "completions")))

    @app.get("/v1/models")
    async def models(request: Request):
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


def incoming(request: Request, endpoint: str) -> Incoming:
    """The request as the serving object sees it (headers are lower-case in ASGI)."""
    limit = request.app.state.settings.gateway.max_body_bytes
    return Incoming(endpoint, lambda: read_body(request, limit), lambda: client_gone(request),
                    request.headers, request.scope.get("state", {}).get("key_id"))


def to_response(answer: Answer | StreamAnswer) -> Response:
    if isinstance(answer, StreamAnswer):
        return RelayResponse(answer.chunks, on_close=answer.close, headers=answer.headers,
                             media_type="text/event-stream")
    return Response(answer.content(), status_code=answer.status, headers=answer.headers,
                    media_type="application/json" if answer.body is not None else None)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body: 413 past `limit` bytes (checked while reading); ClientGone if the client
    hangs up mid-body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        raise ClientGone from None
    return bytes(body)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than {limit} bytes (gateway.max_body_bytes)",
                        code="request_too_large")


def client_gone(request: Request) -> asyncio.Future:
    """A future done once the client has hung up (call after the body is read): the one the
    HTTP protocol keeps for this request (server.py), else a task that waits on `receive()`."""
    gone = request.scope.get(CLIENT_GONE)
    if gone is not None:
        return gone
    return asyncio.get_running_loop().create_task(_disconnected(request))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":  # after the body: waits
        pass


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


__all__ = ["create_app", "app_from_env", "check_bind", "read_api_keys"]
