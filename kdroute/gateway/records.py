"""The request record: one per gateway request, written to the ledger's `requests` table.

The record is also the hook for the monitor: listeners registered on the gateway receive every
finished `RequestRecord` (with the conversation and the answer in memory, whether or not the
ledger stores text), e.g. to sample student answers for shadow evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from kdroute.gateway.redaction import REDACTED, cap, clean_text, looks_like_a_token, redact
from kdroute.messages import message_text

__all__ = ["REDACTED", "RequestRecord", "key_id", "new_request_id", "redact", "utc_now"]

# Longest `requested_model` / `error` a row keeps: a client can send a 900 KB model name.
MAX_ECHO = 256
MAX_ERROR = 2000
_ROUTE_NAME = re.compile(r"(?:kdroute/)?(?:auto|teacher|student)(?:@[0-9.]{1,12})?")


def key_id(key: str) -> str:
    """A short, stable, non-reversible id for an API key: the ledger never sees the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def new_request_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class RequestRecord:
    """Everything DESIGN.md's request-log contract names, filled in as the request proceeds."""

    id: str
    endpoint: str  # chat | completions
    requested_model: str | None = None
    ts: str = field(default_factory=utc_now)
    served_model: str | None = None
    served_role: str | None = None  # teacher | student
    route_reason: str = "error"  # router | override | fallback | breaker | error
    router_score: float | None = None
    threshold: float | None = None
    router_version: str | None = None
    slice: str | None = None  # the monitor's slice ("family:arith", or "all"); set when routed
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float = 0.0
    teacher_cost_usd: float = 0.0
    status: int = 200
    error: str | None = None
    fallback: bool = False
    stream: bool = False
    # Streams only: what the client saw after the 200 and the first byte. completed (ended with
    # [DONE]) | upstream_error (an error event, then [DONE]) | client_disconnected (it left).
    stream_outcome: str | None = None
    key_id: str | None = None
    slice: str | None = None  # the monitor's slice of this request (m002), when it sets one
    # In memory for listeners; copied into the row only when store_text is on.
    conversation: list[dict[str, Any]] | None = field(default=None, repr=False)
    response_text: str | None = field(default=None, repr=False)
    # The fields forwarded to the back end (after the allow-list), e.g. for a shadow call.
    payload: dict[str, Any] | None = field(default=None, repr=False)
    logged: bool = field(default=False, repr=False)  # finished and handed to the writer

    @property
    def answered(self) -> bool:
        """The client received a whole answer (a 200, and for a stream, up to [DONE])."""
        return self.status == 200 and self.stream_outcome in (None, "completed")

    def row(self, store_text: bool, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        """The ledger row: text columns only when asked, always redacted, every string free of
        lone surrogates (SQLite cannot encode them, and one such row used to sink its batch)."""
        row = {name: getattr(self, name) for name in _columns()}
        requested = self.requested_model
        if requested is not None and not _ROUTE_NAME.fullmatch(requested):  # the common case
            if looks_like_a_token(requested):  # a key sent as the model: not in the error either
                secrets = (*secrets, requested, requested[:64])
            requested = redact(requested, secrets)
        row["requested_model"] = cap(requested, MAX_ECHO)
        row["error"] = cap(redact(self.error, secrets), MAX_ERROR)
        row["fallback"], row["stream"] = int(self.fallback), int(self.stream)
        row["prompt_text"] = row["response_text"] = None
        if store_text:
            prompt = "\n".join(f"{m.get('role')}: {message_text(m)}"
                               for m in self.conversation or [])
            row["prompt_text"] = redact(prompt, secrets)
            row["response_text"] = redact(self.response_text, secrets)
        for key, value in row.items():  # e.g. the served model name, the monitor's slice
            if isinstance(value, str) and not value.isascii():
                row[key] = clean_text(value)
        return row


_IN_MEMORY = ("conversation", "response_text", "payload", "logged")


@functools.cache
def _columns() -> tuple[str, ...]:
    """The record's fields that are ledger columns (every field but the in-memory ones)."""
    return tuple(f.name for f in fields(RequestRecord) if f.name not in _IN_MEMORY)
