"""What a scorer sees of a request: the conversation flattened to one text, and lexical features.

Multi-turn conversations are scored as one text (`conversation_text`): the LAST user message comes
first, then the earlier messages newest-first, each prefixed by its role. Why this order: the
embedding model truncates long inputs at the end, so the message that must be answered is never cut
and the oldest context is the first to go; and a single-turn conversation flattens to exactly its
prompt, which is what routers are trained on (bench prompts, RouteLLM files). The lexical features
are computed on the whole flattened text and include the number of user turns, so a long
conversation with a hard history scores as harder than its last message alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from kdroute.errors import InputError
from kdroute.messages import message_text

Message = Mapping[str, object]


def conversation_text(conversation: Sequence[Message] | str) -> str:
    """Flatten a conversation for scoring: last user message first, then older turns newest-first.

    A plain string is taken as a single user prompt. A conversation without a user message is
    scored on all its messages in the same newest-first order.
    """
    if isinstance(conversation, str):
        return conversation
    if not isinstance(conversation, Sequence) or not all(
            isinstance(m, Mapping) for m in conversation):
        raise InputError("a conversation must be a list of chat messages {role, content}")
    messages = list(conversation)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return "\n\n".join(f"{m.get('role', 'user')}: {message_text(m)}"
                           for m in reversed(messages))
    head = message_text(messages[last_user])
    rest = [m for i, m in enumerate(messages) if i != last_user]
    if not rest:
        return head
    context = "\n\n".join(f"{m.get('role', 'user')}: {message_text(m)}" for m in reversed(rest))
    return f"{head}\n\n{context}"


def user_turns(text: str) -> int:
    """User turns in a flattened conversation: the leading message plus each older `user:` one."""
    return 1 + text.count("\n\nuser: ")


# --- lexical features -------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_WORD = re.compile(r"[A-Za-z]+")
_MATH = re.compile(r"[=+\-*/^<>%$]|\\frac|\\sqrt|sqrt|log|sin|cos|integral|derivative")
_CODE = re.compile(r"```|def |class |return |import |\{|\}|;\s*$|#include|SELECT |=>", re.M)
_HARD_WORDS = re.compile(
    r"\b(prove|proof|derive|explain why|why|analy[sz]e|evaluate|compare|justify|optimi[sz]e|"
    r"algorithm|complexity|theorem|statement 1|calculate|compute|probability|percent|"
    r"ratio|rate|each|total|remaining|respectively|except|not|least|most)\b", re.I)
_EASY_WORDS = re.compile(
    r"\b(hi|hello|thanks|thank you|what is|who is|define|translate|list|name)\b", re.I)
_CHOICES = re.compile(r"^\s*[A-D][.)]\s", re.M)

LEXICAL_NAMES = (
    "log_chars", "log_words", "mean_word_len", "digit_frac", "numbers", "math_ops", "code",
    "hard_words", "easy_words", "questions", "sentences", "choices", "long_choice", "turns",
)


def lexical_features(text: str) -> list[float]:
    """Cheap, training-free features of one flattened conversation, in `LEXICAL_NAMES` order."""
    n_chars = len(text)
    words = _WORD.findall(text)
    n_words = len(words)
    choice_lines = [ln for ln in text.splitlines() if _CHOICES.match(ln)]
    return [
        math.log1p(n_chars),
        math.log1p(n_words),
        (sum(len(w) for w in words) / n_words) if n_words else 0.0,
        len(_DIGIT.findall(text)) / max(n_chars, 1),
        math.log1p(len(_NUMBER.findall(text))),
        math.log1p(len(_MATH.findall(text))),
        math.log1p(len(_CODE.findall(text))),
        math.log1p(len(_HARD_WORDS.findall(text))),
        math.log1p(len(_EASY_WORDS.findall(text))),
        math.log1p(text.count("?")),
        math.log1p(len(re.findall(r"[.!?](?:\s|$)", text))),
        float(len(choice_lines)),
        math.log1p(max((len(ln) for ln in choice_lines), default=0)),
        math.log1p(user_turns(text) - 1),
    ]


def lexical_matrix(texts: Sequence[str]) -> np.ndarray:
    """(N, F) lexical features of N texts."""
    return np.asarray([lexical_features(t) for t in texts],
                      dtype=np.float64).reshape(len(texts), len(LEXICAL_NAMES))
