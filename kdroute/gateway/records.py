"""The request record: one per gateway request, written to the ledger's `requests` table.

The record is also the hook for the monitor: listeners registered on the gateway receive every
finished `RequestRecord` (with the conversation and the answer in memory, whether or not the
ledger stores text), e.g. to sample student answers for shadow evaluation.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kdroute.gateway.protocol import message_text

# Secrets that must never reach the ledger even when prompts are stored: bearer tokens, OpenAI /
# Anthropic style keys, and any configured key (passed explicitly to `redact`).
_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[^\s\"']+"),
    re.compile(r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"),
)
REDACTED = "[REDACTED]"


def key_id(key: str) -> str:
    """A short, stable, non-reversible id for an API key: the ledger never sees the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def redact(text: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """`text` with known secrets and anything key-shaped replaced by [REDACTED]."""
    if text is None:
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _SECRET_PATTERNS[0].sub("Bearer " + REDACTED, text)
    text = _SECRET_PATTERNS[1].sub(REDACTED, text)
    return _SECRET_PATTERNS[2].sub(lambda m: m.group(1) + REDACTED, text)


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
    key_id: str | None = None
    # In memory for listeners; copied into the row only when store_text is on.
    conversation: list[dict[str, Any]] | None = field(default=None, repr=False)
    response_text: str | None = field(default=None, repr=False)
    logged: bool = field(default=False, repr=False)  # finished and handed to the writer


    def row(self, store_text: bool, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        """The ledger row: text columns only when asked, always redacted."""
        row = asdict(self)
        conversation = row.pop("conversation")
        del row["logged"]
        row["fallback"] = int(self.fallback)
        row["stream"] = int(self.stream)
        row["error"] = redact(self.error, secrets)
        if store_text:
            prompt = "\n".join(f"{m.get('role')}: {message_text(m.get('content'))}"
                               for m in conversation or [])
            row["prompt_text"] = redact(prompt, secrets)
            row["response_text"] = redact(self.response_text, secrets)
        else:
            row["prompt_text"] = None
            row["response_text"] = None
        return row
