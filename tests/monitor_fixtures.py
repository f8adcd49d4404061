"""Helpers for the monitor's gateway tests: a gateway (real uvicorn on 127.0.0.1) with the
monitor configured per test, in front of the module's fake teacher and student, and readers for
its /metrics and ledger."""

from __future__ import annotations

import contextlib
import time

import httpx
import openai
from fake_openai import AppServer
from gateway_fixtures import EASY, KEYS, Gateway, KeywordRouter, make_settings
from prometheus_client.parser import text_string_to_metric_families

FAST = {"poll_interval_s": 0.05}


@contextlib.contextmanager
def monitored_gateway(fakes, db, **monitor):
    from kdroute.gateway import create_app

    teacher, student = fakes
    settings = make_settings(teacher.url, student.url, db, monitor={**FAST, **monitor},
                             store_text=True)
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    with AppServer(app) as server:
        yield Gateway(server.url, db, app, teacher, student)


def chat(gw: Gateway, messages=EASY, model="kdroute/auto", **kw):
    client = openai.OpenAI(base_url=gw.v1, api_key=KEYS[0], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    return raw.headers, raw.parse()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll until `predicate()` is truthy (the monitor works in the background); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def metric(gw: Gateway, name: str, **labels) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    text = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def shadow_rows(gw: Gateway, kind: str | None = None) -> list[dict]:
    where = "WHERE kind = ?" if kind else ""
    return gw.query(f"SELECT * FROM shadow_evals {where} ORDER BY id", [kind] if kind else [])


def open_alerts(gw: Gateway) -> list[dict]:
    return gw.query("SELECT * FROM alerts WHERE resolved_at IS NULL ORDER BY id")
