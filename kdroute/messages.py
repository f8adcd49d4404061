"""The text of an OpenAI chat message: one definition for every stage that reads one.

The router scores it (`route/features.py`), the ledger stores it (`gateway/records.py`), the local
provider and the shadow teacher are sent it: all of them must see the same text, or the router
scores one prompt and the ledger records another (issue 16). A leaf module: it imports nothing
from kdroute.

Content parts (`[{"type": "text", "text": ...}, {"type": "image_url", ...}]`) are joined with a
newline, as vLLM's chat template preparation does; parts without text (images) and empty parts
are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Message = Mapping[str, object]


def content_text(content: object) -> str:
    """The text of a message's `content`: a string, a list of content parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = (p.get("text", "") for p in content if isinstance(p, Mapping))
        return "\n".join(str(p) for p in parts if p)
    return str(content)


def message_text(message: Message) -> str:
    """The text of one OpenAI chat message (string content or a list of content parts)."""
    return content_text(message.get("content"))
