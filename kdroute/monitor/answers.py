"""Tier 1 of the agreement scorer: the final answer of a response, extracted and normalised.

Two answers agree at this tier when both yield a final answer of the same kind and the answers are
equal after normalisation. What counts as a final answer, in order of trust:

1. an explicit marker: `#### 42` (GSM8K style), `\\boxed{42}`, "the (final) answer is 42",
   "Answer: (B)";
2. a short response that *is* the answer: "42", "$1,200.00", "B", "(c)", "Paris.";
3. a worked solution: the last number in it ("... so she makes 9 * $2 = $18 every day.").

A response cut off mid-computation (an unclosed `<<9*2=` calculator annotation, a trailing operator)
has no final answer: tier 1 abstains and the pair goes to the next tier. So does a long answer
without a number. Pure functions, no heavy imports: the gateway runs them on every shadow pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# A number as written in answers: optional sign and currency, thousands separators, decimals,
# simple fractions, an optional percent sign.
_NUMBER = r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?%?"
_NUMBER_RE = re.compile(_NUMBER)
_MARKERS = (
    re.compile(r"####\s*(?P<ans>[^\n]+)"),
    re.compile(r"\\boxed\{(?P<ans>[^{}]+)\}"),
    re.compile(r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(?P<ans>[^\n]+)"),
    re.compile(r"(?im)^\s*(?:final\s+)?answer\s*:\s*(?P<ans>[^\n]+)"),
)
_CHOICE_RE = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?(?:[.:)]|\s|$)")
_CHOICE_ONLY_RE = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?[.:]?$")
_TRUNCATED_RE = re.compile(r"(?:<<[^>]*|[-+*/=×÷(]\s*)$")
SHORT_CHARS = 40  # a response this short (after trimming) is taken as the answer itself


@dataclass(frozen=True)
class Answer:
    kind: str  # number | choice | text
    value: str  # normalised: "42", "0.5", "B", "paris"
    source: str  # marker | short | last_number


def normalise_number(raw: str) -> str | None:
    """'$1,200.00' -> '1200', '25%' -> '25', '5/2' -> '5/2' as the exact value '2.5'; None if
    `raw` holds no number."""
    match = _NUMBER_RE.search(raw)
    if match is None:
        return None
    text = match.group(0).replace("$", "").replace(",", "").replace("%", "").replace(" ", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), ".10g")


def normalise_text(raw: str) -> str:
    """Lower case, no surrounding punctuation/markup, single spaces."""
    text = re.sub(r"[*_`]|\\text\{|\}", "", raw).strip().lower()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .,:;!\"'()[]")


def _parse_marked(raw: str, source: str, prompt: str | None) -> Answer | None:
    """The answer after a marker: a choice letter, a number (the first one the prompt does not
    state: "#### 7 packs and 2 glue sticks left" -> 7), or a short text."""
    raw = raw.strip().strip("*").strip()
    choice = _CHOICE_RE.match(raw)
    if choice and not _NUMBER_RE.match(raw):
        rest = raw[choice.end():].strip()
        # "B) 42" or "(B)" is the letter; "Blue whales" is text that starts with B
        if _CHOICE_ONLY_RE.match(raw) or raw[:1] == "(" or raw[1:2] in (")", ".", ":"):
            return Answer("choice", choice.group(1).upper(), source)
        if not rest:
            return Answer("choice", choice.group(1).upper(), source)
    values = [v for v in (normalise_number(m.group(0)) for m in _numbers(raw)) if v is not None]
    if values:
        return Answer("number", _pick(values, prompt, last=False), source)
    text = normalise_text(raw.split(". ")[0])
    return Answer("text", text, source) if 0 < len(text) <= SHORT_CHARS else None


def extract_answer(text: str | None, prompt: str | None = None) -> Answer | None:
    """The final answer of a response, or None when it has none (tier 1 abstains). The prompt,
    when given, tells a worked solution's result from the givens it restates."""
    if not text or not text.strip():
        return None
    body = text.strip()
    for pattern in _MARKERS:
        matches = list(pattern.finditer(body))
        if matches:
            found = _parse_marked(matches[-1].group("ans"), "marker", prompt)
            if found is not None:
                return found
    if len(body) <= SHORT_CHARS:
        if _CHOICE_ONLY_RE.match(body):
            return Answer("choice", _CHOICE_ONLY_RE.match(body).group(1).upper(), "short")
        number = normalise_number(body)
        if number is not None and len(_numbers(body)) == 1 \
                and len(_NUMBER_RE.sub("", body).split()) <= 2:
            return Answer("number", number, "short")
        if number is None:
            return Answer("text", normalise_text(body), "short") if normalise_text(body) else None
    if _TRUNCATED_RE.search(body):
        return None  # cut off mid-computation: whatever number comes last is not the answer
    value = _worked_answer(body, prompt)
    return Answer("number", value, "last_number") if value is not None else None


def _numbers(text: str) -> list[re.Match]:
    """Numbers that are quantities: not glued to a word before them ('B12', 'COVID-19')."""
    return [m for m in _NUMBER_RE.finditer(text)
            if not (m.start() and text[m.start() - 1].isalpha())]


def _worked_answer(body: str, prompt: str | None) -> str | None:
    """The result of a worked solution, read from its last sentence that has a number: the
    number after its last `=` ("... = $18 every day."); else its first number that the prompt
    does not already state ("Claire will eat 7 dozens of eggs in 4 weeks." -> 7 when the prompt
    says "4 weeks"); else its last number."""
    sentences = [s for s in re.split(r"\n+|(?<=[.!?])\s+", body) if _numbers(s)]
    if not sentences:
        return None
    last = sentences[-1]
    if "=" in last:
        after = _numbers(last[last.rindex("=") + 1:])
        if after:
            return normalise_number(after[0].group(0))
    values = [normalise_number(m.group(0)) for m in _numbers(last)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return _pick(values, prompt, last=True)


def _pick(values: list[str], prompt: str | None, last: bool) -> str:
    """Prefer numbers the prompt does not already state (a result, not a given)."""
    given = _given_numbers(prompt)
    fresh = [v for v in values if Fraction(v) not in given] or values
    return fresh[-1] if last else fresh[0]


def _given_numbers(prompt: str | None) -> set[Fraction]:
    if not prompt:
        return set()
    values = (normalise_number(m.group(0)) for m in _numbers(prompt))
    return {Fraction(v) for v in values if v is not None}


def answers_agree(student: Answer, teacher: Answer) -> bool | None:
    """True/False when the answers are comparable, None when this tier cannot tell: different
    kinds, or two short texts that differ ("Yes." and "Yes, it is." may well agree)."""
    if student.kind != teacher.kind:
        return None
    if student.kind == "number":
        return Fraction(student.value) == Fraction(teacher.value)
    if student.kind == "text" and student.value != teacher.value:
        return None
    return student.value == teacher.value
