"""The OpenAI wire protocol as the gateway sees it: decoding the body, request schemas, the fields
a client may set, the error shape, and the one exception that carries an HTTP status to the edge.

Validate before parsing (STYLE.md): the body is decoded strictly (UTF-8 without surrogates, no
NaN/Infinity, bounded nesting), then checked against a strict schema, and only the OpenAI request
fields a client may set are forwarded (`client_payload`). Everything else is refused with a 400
that names it: a back end served through litellm treats unknown fields as litellm arguments
(`api_base`, `api_key`, `mock_response`, ...), so passing them on would let a client redirect a
provider call with the provider key attached, or bill an invented answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_DEPTH = 64  # JSON nesting a request may use (tool schemas nest ~10 deep; 64 is generous)

# What a client may set, per endpoint: OpenAI's generation options. Not here on purpose:
# `metadata`/`store`/`service_tier` (billing and provider-side storage are the operator's
# choice), `best_of` (bills several answers), and every litellm argument.
_COMMON_FIELDS = ("model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n",
                  "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                  "seed", "user")
CLIENT_FIELDS: dict[str, frozenset[str]] = {
    "chat": frozenset(_COMMON_FIELDS + (
        "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
        "tool_choice", "parallel_tool_calls", "functions", "function_call", "reasoning_effort")),
    "completions": frozenset(_COMMON_FIELDS + ("prompt", "echo", "suffix")),
}
# Never forwarded, whatever the configuration says (gateway.extra_body_fields cannot name them):
# litellm call arguments that change where a call goes, which credentials it carries, or what it
# returns without calling anyone.
FORBIDDEN_FIELDS = frozenset((
    "api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "mock_response",
    "mock_tool_calls", "metadata", "extra_headers", "headers", "extra_body", "litellm_params",
    "model_list", "fallbacks", "num_retries", "timeout", "input_cost_per_token",
    "output_cost_per_token", "litellm_logging_obj", "proxy_server_request", "aws_access_key_id",
    "aws_secret_access_key", "vertex_credentials", "azure_ad_token", "organization"))


class GatewayError(Exception):
    """An error the client should see, as OpenAI-shaped JSON with this HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`, the shape every OpenAI client parses."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- decoding ---------------------------------------------------------------------------------

def decode_json(body: bytes) -> Any:
    """The decoded body, or a 400: orjson refuses invalid UTF-8, lone surrogates, NaN/Infinity,
    numbers that overflow a double and nesting past 1,024; nesting past MAX_DEPTH is refused here
    (deeper structures would exhaust the recursion of the encoders further down)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"We could not parse the JSON body of your request: {exc}",
                           code="invalid_json") from None
    # Depth is bounded by the number of brackets: count them in C before walking in Python.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth_exceeds(data, MAX_DEPTH):
        raise GatewayError(400, f"request body nests deeper than {MAX_DEPTH} levels",
                           code="invalid_json")
    return data


def _depth_exceeds(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, dict | list))
    return False


def dumps(payload: Any) -> bytes:
    """JSON bytes for a client or a back end. orjson refuses lone surrogates, which a back end's
    answer may contain: those are written as `\\udXXX` escapes instead, as the back end sent them."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        import json

        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def loads_upstream(data: bytes) -> Any:
    """A back end's JSON (raises ValueError). orjson first; what it refuses, such as a lone
    surrogate escape in an answer, is read by the stdlib as the back end meant it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        import json

        return json.loads(data)


# --- schemas ----------------------------------------------------------------------------------

class _Strict(BaseModel):
    # strict: `"stream": "yes"` or `"max_tokens": "5"` is a 400, not a silent coercion.
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class _Request(_Strict):
    model: str = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1)  # one choice per request: routing is per answer
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None


class ContentPart(_Strict):
    type: str = Field(min_length=1)

    @model_validator(mode="after")
    def _text_is_text(self) -> ContentPart:
        # A text part must carry a string: the router scores it and the ledger may store it.
        if self.type == "text" and not isinstance(getattr(self, "text", None), str):
            raise ValueError("a content part of type 'text' needs a string 'text'")
        return self


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1)]


SCHEMAS: dict[str, type[_Request]] = {"chat": ChatCompletionRequest,
                                      "completions": CompletionRequest}


def validate_request(schema: type[_Request], data: Any) -> _Request:
    """Validate a decoded JSON body; a failure is a 400 naming the offending field as `param`."""
    if not isinstance(data, dict):
        raise GatewayError(400, "request body must be a JSON object", param=None,
                           code="invalid_body")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # Drop pydantic's union-branch names ("str", "list[...]") so param stays a field path.
        param = ".".join(p for p in loc if not (p.startswith(("str", "list[", "dict[", "literal["))
                                                 or p in ("int", "float", "bool", "ContentPart")))
        message = f"{param or 'body'}: {err['msg']}"
        raise GatewayError(400, message, param=param or None, code="invalid_value") from None


def client_payload(endpoint: str, data: dict[str, Any],
                   extra_fields: Iterable[str] = ()) -> dict[str, Any]:
    """The fields forwarded to a back end (without `model`, which the gateway sets): every field
    must be one a client may set on this endpoint, or one the operator allowed in
    `gateway.extra_body_fields`; anything else is a 400 naming it. The monitor's shadow call
    re-sends a request through this same function."""
    allowed = CLIENT_FIELDS[endpoint]
    unknown = [k for k in data if k not in allowed and k not in extra_fields]
    if unknown:
        name = sorted(unknown)[0]
        raise GatewayError(400, f"Unrecognized request argument supplied: {name[:64]}",
                           param=name[:64], code="unknown_parameter")
    return {k: v for k, v in data.items() if k != "model"}


def conversation_of(request: _Request) -> list[dict[str, Any]]:
    """The conversation a router scores: chat messages, or a completion prompt as one user turn."""
    if isinstance(request, ChatCompletionRequest):
        return [m.model_dump(exclude_none=True) for m in request.messages]
    prompt = request.prompt if isinstance(request.prompt, str) else "\n".join(request.prompt)
    return [{"role": "user", "content": prompt}]


def model_list(ids: list[str], created: int) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": i, "object": "model", "created": created, "owned_by": "kdroute"}
                     for i in ids]}
