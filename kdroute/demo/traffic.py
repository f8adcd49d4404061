"""The demo's traffic: held-out prompts with gold answers, replayed through the gateway with the
stock `openai` client, several requests in flight at once.

The prompts are the skill suite's validation split, which neither the router (trained on the
bench samples, i.e. the test split) nor the student's distillation saw. Multiple choice is left
out: lm-eval scores it by likelihood, and a chat answer to it has no gold string to match.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from kdroute.errors import BackendError, InputError
from kdroute.jsonl import iter_jsonl

VALIDATION = Path("evalsets/data/validation.jsonl")
EXCLUDED_FAMILIES = ("mc",)  # scored by likelihood, no gold string
MAX_TOKENS = 24  # every gold answer of the skill suite fits (the longest, sort, is 19 characters)


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the replay (the order requests are sent)
    prompt: str
    gold: str
    family: str
    difficulty: int


@dataclass(frozen=True)
class Reply:
    index: int
    request_id: str
    served_model: str
    route_reason: str
    text: str
    correct: bool


def is_correct(answer: str, gold: str) -> bool:
    """Exact match after trimming whitespace (the skill suite's answers are single tokens or
    space-separated lists, so nothing else needs normalising)."""
    return answer.strip() == gold.strip()


def held_out_prompts(root: Path, n: int, seed: int = 0) -> list[Prompt]:
    """`n` prompts of the validation split in a seeded shuffle, so any prefix mixes families and
    difficulties. Asking for more than the split holds is an error, not a repeat."""
    path = root / VALIDATION
    if not path.is_file():
        raise InputError(f"{path}: the skill suite's validation split is missing "
                         "(evalsets/ is part of the repository)")
    rows = [row for _, row in iter_jsonl(path) if row.get("family") not in EXCLUDED_FAMILIES]
    if n > len(rows):
        raise InputError(f"--requests {n}: the validation split has {len(rows)} prompts "
                         f"outside {', '.join(EXCLUDED_FAMILIES)}")
    random.Random(seed).shuffle(rows)
    return [Prompt(i, r["prompt"], str(r["response"]), r["family"], int(r.get("difficulty") or 0))
            for i, r in enumerate(rows[:n])]


def replay(base_url: str, api_key: str, prompts: Iterable[Prompt], model: str, *,
           concurrency: int = 8, on_reply: Callable[[Reply], None] | None = None) -> list[Reply]:
    """Send every prompt as one chat request to `model` with `concurrency` requests in flight;
    the replies in prompt order. The first failed request stops the replay (BackendError)."""
    from openai import APIError, OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=120.0)

    def one(p: Prompt) -> Reply:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": p.prompt}],
                max_tokens=MAX_TOKENS, temperature=0)
        except APIError as exc:
            status = getattr(exc, "status_code", None)
            raise BackendError(f"the gateway answered {status or 'nothing'} to {model}: "
                               f"{exc.message}") from None
        text = raw.parse().choices[0].message.content or ""
        headers = raw.headers
        return Reply(p.index, headers.get("x-kdroute-request-id", ""),
                     headers.get("x-kdroute-served-model", ""),
                     headers.get("x-kdroute-route-reason", ""), text, is_correct(text, p.gold))

    replies: list[Reply] = []
    with ThreadPoolExecutor(concurrency, thread_name_prefix="kdroute-demo") as pool:
        pending = {pool.submit(one, p) for p in prompts}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    reply = future.result()  # re-raises the first failure
                    replies.append(reply)
                    if on_reply is not None:
                        on_reply(reply)
        finally:
            for future in pending:
                future.cancel()
            client.close()
    return sorted(replies, key=lambda r: r.index)


# --- the baselines' cache -----------------------------------------------------------------------

class BaselineCache:
    """Answers of the always-teacher and always-student baselines by prompt, for one pair of model
    fingerprints: greedy decoding makes them a function of (model, prompt), so a re-run asks the
    gateway only for prompts it has not seen."""

    def __init__(self, path: Path, teacher_fp: str, student_fp: str):
        self.path = path
        self.key = hashlib.sha256(f"{teacher_fp}\0{student_fp}\0{MAX_TOKENS}".encode()
                                  ).hexdigest()[:16]
        data = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                data = {}
        if data.get("key") != self.key:
            data = {"key": self.key, "replies": {"teacher": {}, "student": {}}}
        self.data = data

    def missing(self, role: str, prompts: list[Prompt]) -> list[Prompt]:
        seen = self.data["replies"][role]
        return [p for p in prompts if p.prompt not in seen]

    def add(self, role: str, prompts: list[Prompt], replies: list[Reply]) -> None:
        by_index = {p.index: p for p in prompts}
        for r in replies:
            self.data["replies"][role][by_index[r.index].prompt] = asdict(r)

    def replies(self, role: str, prompts: list[Prompt]) -> list[Reply]:
        """The cached replies for `prompts`, re-indexed and re-scored against their gold."""
        seen = self.data["replies"][role]
        out = []
        for p in prompts:
            row = dict(seen[p.prompt], index=p.index)
            row["correct"] = is_correct(row["text"], p.gold)
            out.append(Reply(**row))
        return out

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data))
