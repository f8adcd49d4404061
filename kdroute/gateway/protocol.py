"""The OpenAI wire protocol as the gateway sees it: request schemas, the error shape, and the one
exception that carries an HTTP status to the edge.

Schemas validate only what the gateway itself relies on (model, messages, stream, token limits,
sampling ranges); every other OpenAI field is passed through to the back end untouched, so new
client options keep working without a gateway release.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


class _Request(BaseModel):
    # extra="allow": unknown OpenAI options (tools, seed, logprobs, ...) pass through unchanged.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1)  # one choice per request: routing is per answer
    stream_options: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Request):
    prompt: str | list[str]


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
                                                 or p in ("int", "float", "bool")))
        message = f"{param or 'body'}: {err['msg']}"
        raise GatewayError(400, message, param=param or None, code="invalid_value") from None


def conversation_of(request: _Request) -> list[dict[str, Any]]:
    """The conversation a router scores: chat messages, or a completion prompt as one user turn."""
    if isinstance(request, ChatCompletionRequest):
        return [m.model_dump(exclude_none=True) for m in request.messages]
    prompt = request.prompt if isinstance(request.prompt, str) else "\n".join(request.prompt)
    return [{"role": "user", "content": prompt}]


def message_text(content: Any) -> str:
    """The text of a message's content (string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def model_list(ids: list[str], created: int) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": i, "object": "model", "created": created, "owned_by": "kdroute"}
                     for i in ids]}
