"""Fixtures shared by the gateway tests: two fake back ends (teacher, student), a gateway on
127.0.0.1 in front of them with a deterministic keyword router, and ledger helpers.

A test module uses them with `fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_openai import AppServer, FakeOpenAI

KEYS = ("sk-kdtest-alpha-0123456789abcdef", "sk-kdtest-beta-fedcba9876543210")
TEACHER = {"model": "openai/big-teacher", "input_price_per_1m": 5.0, "output_price_per_1m": 15.0,
           "timeout_s": 3.0, "max_retries": 2}
STUDENT = {"model": "openai/small-student", "input_price_per_1m": 0.1,
           "output_price_per_1m": 0.3, "timeout_s": 2.0, "max_retries": 2}
EASY = [{"role": "user", "content": "say hi"}]
HARD = [{"role": "user", "content": "a hard proof, please"}]


class KeywordRouter:
    """A deterministic router: 0.9 when the conversation mentions "hard", else 0.1."""

    scorer_name = "keyword"
    threshold = 0.5
    version = "keyword-test-1"

    def score_one(self, conversation: list[dict]) -> float:
        text = " ".join(str(m.get("content") or "") for m in conversation)
        return 0.9 if "hard" in text else 0.1

    def route(self, conversation, threshold=None):
        score = self.score_one(conversation)
        t = self.threshold if threshold is None else threshold
        return ("teacher" if score >= t else "student"), score


def make_settings(teacher_url: str, student_url: str, db: Path, monitor: dict | None = None,
                  **gateway):
    """Gateway settings in front of the fakes. Shadowing is off unless `monitor` turns it on, so
    tests that count back-end calls see only the calls their requests make."""
    from kdroute.config import Settings

    return Settings.model_validate({
        "teacher": dict(TEACHER, api_base=teacher_url),
        "student": dict(STUDENT, api_base=student_url),
        "store": {"path": str(db)},
        "gateway": {"retry_backoff_s": 0.01, "writer_flush_interval_s": 0.05,
                    "max_body_bytes": 4096, **gateway},
        "monitor": {"shadow_rate": 0.0, **(monitor or {})},
    })


@dataclass
class Gateway:
    url: str
    db: Path
    app: object
    teacher: FakeOpenAI
    student: FakeOpenAI

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def rows(self, ids, timeout: float = 15.0) -> dict[str, dict]:
        """Ledger rows of these request ids, waiting for the batched writer to flush them."""
        ids = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {r["id"]: r for r in self.query(
                f"SELECT * FROM requests WHERE id IN ({','.join('?' * len(ids))})", list(ids))}
            if len(found) == len(ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def row(self, request_id: str) -> dict:
        found = self.rows([request_id])
        assert request_id in found, f"no ledger row for request {request_id}"
        return found[request_id]

    def query(self, sql: str, params=()) -> list[dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI("teacher") as teacher, FakeOpenAI("student") as student:
        yield teacher, student


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    from kdroute.gateway import create_app

    teacher, student = fakes
    db = tmp_path_factory.mktemp("gateway") / "ledger.db"
    settings = make_settings(teacher.url, student.url, db, store_text=True)
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": ",".join(KEYS)})
    with AppServer(app) as server:
        yield Gateway(server.url, db, app, teacher, student)


@pytest.fixture(autouse=True)
def _reset_fakes(request):
    if "fakes" in request.fixturenames:
        for fake in request.getfixturevalue("fakes"):
            fake.reset()
    yield
