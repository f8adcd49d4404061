"""Model back ends: where the gateway sends a request once the router has picked a role.

Two implementations behind one small interface (`complete`, `stream`, `ready`, `aclose`):

- `HTTPBackend`: a direct, pooled aiohttp session for OpenAI-compatible endpoints (`api_base` set and
  an OpenAI-style provider prefix: vLLM, TGI, llama.cpp, another gateway...). This is the hot path;
  litellm costs ~7 ms of CPU per call on top of the HTTP request, and seconds to import.
- `LiteLLMBackend`: every other litellm model string (Anthropic, Bedrock, Ollama, ...) and local
  `hf:` directories, which litellm serves through kdroute's custom provider (`gateway/local.py`).

Both raise `UpstreamError`; `with_retries` retries 429/5xx and connection failures with
exponential back-off, honouring `retry-after` up to a bound, and never retries other 4xx or a
timeout (the per-model timeout is already the caller's budget).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp

from kdroute.config import ModelConfig, Settings
from kdroute.errors import ConfigError
from kdroute.gateway.errors import LOCAL_PROVIDER, UpstreamError
from kdroute.gateway.protocol import dumps, loads_upstream
from kdroute.gateway.upstream import UpstreamClient

T = TypeVar("T")
# litellm provider prefixes that speak the OpenAI wire protocol at `api_base`.
OPENAI_COMPATIBLE = ("openai", "hosted_vllm", "custom_openai", "openai_like", "lm_studio")
ENDPOINT_PATHS = {"chat": "/chat/completions", "completions": "/completions"}


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_s: float = 0.25
    max_wait_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry `attempt` (0-based), or None to give up now."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait_s else None
        base = self.backoff_s * 2**attempt
        return min(base * (0.5 + random.random()), self.max_wait_s)  # jitter de-synchronises clients


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy,
                       on_retry: Callable[[UpstreamError], None] | None = None) -> T:
    attempt = 0
    while True:
        try:
            return await call()
        except UpstreamError as exc:
            wait = policy.delay(attempt, exc.retry_after) if exc.retryable else None
            if wait is None or attempt >= policy.max_retries:
                raise
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(wait)
            attempt += 1


def parse_retry_after(value: str | None) -> float | None:
    """`retry-after` as seconds (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        import time

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class HTTPBackend:
    """An OpenAI-compatible endpoint called directly over the gateway's pooled aiohttp session
    (`UpstreamClient.session`, see upstream.py for why not httpx)."""

    def __init__(self, name: str, upstream_model: str, api_base: str, api_key: str | None,
                 timeout_s: float, client: UpstreamClient):
        self.name = name
        self.upstream_model = upstream_model
        self.api_base = api_base.rstrip("/")
        # Per operation, as httpx's was: connecting (pool wait included) and each read. A
        # stream may run longer than timeout_s in all; the gateway bounds a whole call itself.
        self.timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        self.client = client
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    async def complete(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = dumps(dict(payload, model=self.upstream_model, stream=False))
        try:
            async with self.client.session.post(self.api_base + ENDPOINT_PATHS[endpoint],
                                                data=body, headers=self.headers,
                                                timeout=self.timeout) as resp:
                content = await resp.read()
        except TimeoutError:  # aiohttp's own timeouts (ServerTimeoutError too) are TimeoutErrors
            raise UpstreamError(None, f"{self.name} timed out", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(None, f"{self.name} unreachable: {type(exc).__name__}") from None
        if resp.status >= 400:
            raise _status_error(self.name, resp.status, content, resp.headers)
        try:
            return loads_upstream(content)
        except ValueError:
            raise UpstreamError(502, f"{self.name} returned a body that is not JSON") from None

    async def stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[dict]:
        body = dumps(dict(payload, model=self.upstream_model, stream=True))
        try:
            async with self.client.session.post(self.api_base + ENDPOINT_PATHS[endpoint],
                                                data=body, headers=self.headers,
                                                timeout=self.timeout) as resp:
                if resp.status >= 400:
                    raise _status_error(self.name, resp.status, await resp.read(), resp.headers)
                # SSE lines split here, not by aiohttp's line reader: it refuses lines past
                # 128 KiB (a long tool-call argument), and one read often holds several events.
                rest = b""
                async for received in resp.content.iter_any():
                    lines = (rest + received).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            return
                        yield _decode_chunk(self.name, data)
        except TimeoutError:
            raise UpstreamError(None, f"{self.name} timed out", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(None, f"{self.name} stream broke: {type(exc).__name__}") from None
        raise UpstreamError(502, f"{self.name} ended the stream without [DONE]")

    async def warm(self) -> None:
        pass  # nothing to load: the pooled session connects on first use

    async def ready(self) -> bool:
        try:
            async with self.client.session.get(self.api_base + "/models", headers=self.headers,
                                               timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                return resp.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def aclose(self) -> None:
        pass  # the shared client is closed by the gateway


def _decode_chunk(name: str, data: bytes) -> dict[str, Any]:
    try:
        chunk = loads_upstream(data)
    except ValueError:
        raise UpstreamError(502, f"{name} sent a stream event that is not JSON") from None
    if isinstance(chunk, dict) and "error" in chunk:
        err = chunk["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamError(502, f"{name} failed mid-stream: {message}")
    return chunk


def _status_error(name: str, status: int, content: bytes, headers) -> UpstreamError:
    message = ""
    try:
        err = loads_upstream(content).get("error")
        message = err.get("message", "") if isinstance(err, dict) else str(err or "")
    except (ValueError, AttributeError):
        message = content[:200].decode("utf-8", "replace")
    return UpstreamError(status, f"{name} returned {status}: {message}".rstrip(": "),
                         retry_after=parse_retry_after(headers.get("retry-after")))


class LiteLLMBackend:
    """Any litellm model string, including kdroute's local `hf:` provider."""

    def __init__(self, name: str, litellm_model: str, api_base: str | None,
                 api_key: str | None, timeout_s: float, local_dir: str | None = None,
                 extra_fields: frozenset[str] = frozenset()):
        self.name = name
        self.model = litellm_model
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.local_dir = local_dir
        self.extra_fields = extra_fields

    def _kwargs(self, payload: dict[str, Any]) -> dict[str, Any]:
        # `payload` holds only client-settable OpenAI fields (protocol.client_payload): litellm
        # takes those as arguments. Fields the operator allowed beyond them go in the request
        # body (`extra_body`), never as litellm arguments.
        kwargs = {k: v for k, v in payload.items()
                  if k not in ("model", "stream", "user") and k not in self.extra_fields}
        extra = {k: payload[k] for k in self.extra_fields if k in payload}
        if extra:
            kwargs["extra_body"] = extra
        kwargs.update(model=self.model, timeout=self.timeout_s, num_retries=0)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        return kwargs

    async def complete(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        import litellm

        call = litellm.acompletion if endpoint == "chat" else litellm.atext_completion
        try:
            response = await call(**self._kwargs(payload))
        except Exception as exc:  # litellm raises many types; all become UpstreamError here
            raise litellm_error(self.name, exc) from None
        return response.model_dump(exclude_none=True)

    async def stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[dict]:
        import litellm

        call = litellm.acompletion if endpoint == "chat" else litellm.atext_completion
        kwargs = self._kwargs(payload)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await call(**kwargs)
            async for chunk in response:
                yield chunk.model_dump(exclude_none=True)
        except UpstreamError:
            raise
        except Exception as exc:
            raise litellm_error(self.name, exc) from None

    async def warm(self) -> None:
        """Import litellm (seconds) and load a local model in a thread, before serving."""
        def load() -> None:
            import litellm  # noqa: F401

            if self.local_dir is not None:
                from kdroute.gateway.local import register_local_provider

                register_local_provider().load(self.local_dir)

        await asyncio.to_thread(load)

    async def ready(self) -> bool:
        if self.local_dir is not None:
            return os.path.isfile(os.path.join(self.local_dir, "config.json"))
        return True  # a hosted provider cannot be probed without a billed call

    async def aclose(self) -> None:
        pass


def litellm_error(name: str, exc: Exception) -> UpstreamError:
    import litellm

    if isinstance(exc, litellm.Timeout | asyncio.TimeoutError):
        return UpstreamError(None, f"{name} timed out", timeout=True)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    retry_after = None
    if response is not None and getattr(response, "headers", None) is not None:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    if isinstance(exc, litellm.APIConnectionError):
        status = None
    message = str(getattr(exc, "message", exc)).splitlines()[0][:300]
    return UpstreamError(status if isinstance(status, int) else None, f"{name}: {message}",
                         retry_after=retry_after)


Backend = HTTPBackend | LiteLLMBackend


def build_backend(role: str, model: ModelConfig, settings: Settings,
                  client: UpstreamClient, extra_fields: frozenset[str] = frozenset()) -> Backend:
    """Pick the direct HTTP path when the endpoint speaks OpenAI, litellm otherwise."""
    api_key = None
    if model.api_key_env:
        api_key = os.environ.get(model.api_key_env)
        if not api_key:
            raise ConfigError(f"{role}.api_key_env: environment variable {model.api_key_env} "
                              "is not set")
    if model.is_local:
        local_dir = settings.model_path(model.model).resolve()
        if not (local_dir / "config.json").is_file():
            raise ConfigError(f"{role}.model: {model.model!r} is not a Hugging Face model "
                              f"directory ({local_dir} has no config.json)")
        from kdroute.gateway.local import register_local_provider

        register_local_provider()
        return LiteLLMBackend(model.model, f"{LOCAL_PROVIDER}/{local_dir}", None, None,
                              model.timeout_s, local_dir=str(local_dir),
                              extra_fields=extra_fields)
    provider, _, rest = model.model.partition("/")
    if model.api_base and rest and provider in OPENAI_COMPATIBLE:
        return HTTPBackend(model.model, rest, model.api_base, api_key, model.timeout_s, client)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return LiteLLMBackend(model.model, model.model, model.api_base, api_key, model.timeout_s,
                          extra_fields=extra_fields)
