"""Secrets out of everything the gateway writes down: ledger rows, warnings, the access log.

The patterns are detect-secrets' maintained regex plugins (AWS, GitHub, GitLab, Stripe, Slack,
JWT, private keys, URL credentials, ...), plus what those plugins leave to context: HTTP
`Bearer`/`Basic` credentials, `sk-`-style provider keys of any vendor, `api_key=`-style pairs and
whole PEM blocks. Configured keys (clients' and providers') are replaced verbatim first. Every
logged string is also freed of lone surrogates, which SQLite cannot encode.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from collections.abc import Callable

REDACTED = "[REDACTED]"
# detect-secrets plugins whose patterns flag ordinary prose or data rather than credentials:
# public IP addresses, and Artifactory's "AP + 9 letters" (APEXLEGENDS).
_SKIPPED_PLUGINS = ("IPPublicDetector", "ArtifactoryDetector")
_SURROGATE = re.compile("[\ud800-\udfff]")

# (pattern, group to replace; 0 = the whole match)
_OWN_PATTERNS: tuple[tuple[str, int], ...] = (
    (r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY"
     r"(?: BLOCK)?-----", 0),
    (r"(?i)\bbearer\b[\s:=]+([^\s\"',;]+)", 1),
    # provider keys: sk-... / SK-... / pk- / rk- / sess- as a word of their own; and, when the
    # rest holds a digit (so prose like "task-oriented" stays), any vendor prefix: xsk-...,
    # sk_live_..., key-..., token_...
    (r"(?i)\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{8,}", 0),
    (r"(?i)\b[a-z]{0,10}(?:sk|pk|rk|sess|key|tok|token|secret)[-_](?=[A-Za-z0-9_\-]*\d)"
     r"[A-Za-z0-9_\-]{8,}", 0),
    (r"(?i)((?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|client[_-]?secret|secret"
     r"|password|passwd|pwd)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;]+)", 2),
)
_BASIC = re.compile(r"(?i)\bbasic[\s:=]+([A-Za-z0-9+/]{6,}={0,2})")


@functools.cache
def _patterns() -> tuple[tuple[re.Pattern, int, bool], ...]:
    """Compiled once per process (importing detect-secrets takes ~0.5 s: at start-up, not at
    import of this module)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    # (pattern, group, whether the group is surely the secret's value)
    found: list[tuple[re.Pattern, int, bool]] = [(re.compile(p), g, True)
                                                  for p, g in _OWN_PATTERNS]
    for cls in get_mapping_from_secret_type_to_class().values():
        if not issubclass(cls, RegexBasedDetector) or cls.__name__ in _SKIPPED_PLUGINS:
            continue
        for regex in cls().denylist:
            found.append((regex, 1 if regex.groups else 0, False))
    return tuple(found)


def warm() -> None:
    """Load the pattern set now (the gateway calls this at start-up)."""
    _patterns()


@functools.cache
def _replacer(group: int, trusted: bool) -> Callable[[re.Match], str]:
    def replace(m: re.Match) -> str:
        # Some plugins capture the secret's value (`://user:(pw)@`), others only its kind
        # (`(ghp)_...`): a group at the start of the match, or a short one, means the latter.
        if group == 0 or m.group(group) is None or (not trusted and (
                m.start(group) == m.start(0) or len(m.group(group)) < 8)):
            return REDACTED
        start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
        whole = m.group(0)
        return whole[:start] + REDACTED + whole[end:]
    return replace


def _basic(m: re.Match) -> str:
    """`Basic <base64 of user:password>`; other words after "basic" stay ("basic idea")."""
    try:
        decoded = base64.b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4), validate=True)
    except (binascii.Error, ValueError):
        return m.group(0)
    if b":" not in decoded:
        return m.group(0)
    return m.group(0)[: m.start(1) - m.start(0)] + REDACTED


def clean_text(text: str) -> str:
    """`text` with each lone surrogate (invalid Unicode, unencodable in SQLite) as U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def redact(text: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """`text` with known secrets and anything credential-shaped replaced by [REDACTED]."""
    if text is None:
        return None
    text = clean_text(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for regex, group, trusted in _patterns():
        text = regex.sub(_replacer(group, trusted), text)
    return _BASIC.sub(_basic, text)


def looks_like_a_token(value: str) -> bool:
    """A long unbroken high-entropy string: most likely a key pasted in the wrong field."""
    if len(value) < 20 or any(c.isspace() for c in value):
        return False
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return Base64HighEntropyString().calculate_shannon_entropy(value) > 3.5


def cap(text: str | None, limit: int) -> str | None:
    """At most `limit` characters, saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


_secrets: set[str] = set()
_installed = False


def install_log_redaction(secrets: tuple[str, ...] = ()) -> None:
    """Redact every log record of this process as it is made (a log record factory, so no
    logger's or handler's later reconfiguration, e.g. uvicorn's, can bypass it). `secrets` are
    added to the verbatim set; several apps in one process (tests) each add theirs."""
    global _installed
    _secrets.update(s for s in secrets if s)
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return record
        known = tuple(_secrets)
        if isinstance(record.args, tuple) and record.args:
            # Keep msg and args apart: formatters such as uvicorn's access log unpack args.
            record.msg = redact(str(record.msg), known)
            record.args = tuple(redact(a, known) if isinstance(a, str) else a
                                for a in record.args)
        elif message is not None:
            record.msg, record.args = redact(message, known), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), known)
        return record

    logging.setLogRecordFactory(factory)
