"""Tier 3, the LLM judge, against a fake judge model served as a real HTTP server: through the
gateway (a configured judge model) and directly (its answer-order randomisation)."""

import asyncio

import gateway_fixtures as fx
import pytest
from fake_openai import FakeOpenAI
from monitor_fixtures import chat, metric, monitored_gateway, shadow_rows, wait_for

from kdroute.gateway.backends import HTTPBackend
from kdroute.gateway.costing import Prices
from kdroute.gateway.upstream import UpstreamClient
from kdroute.monitor.agreement import LLMJudge

fakes, _reset_fakes = fx.fakes, fx._reset_fakes

STUDENT_ESSAY = "Leaves turn red in autumn because chlorophyll breaks down and reveals pigments."
TEACHER_ESSAY = "In autumn the green chlorophyll fades, so the red and yellow pigments show."
JUDGE = {"model": "openai/judge-model", "input_price_per_1m": 1.0, "output_price_per_1m": 2.0}


@pytest.fixture
def judge_server():
    with FakeOpenAI("judge") as judge:
        yield judge


def test_the_configured_judge_decides_pairs_without_a_final_answer(fakes, tmp_path, judge_server):
    teacher, student = fakes
    student.set(text=STUDENT_ESSAY)
    teacher.set(text=TEACHER_ESSAY)
    judge_server.set(text="SAME", prompt_tokens=300, completion_tokens=1)
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0,
                           agreement_method="answer+judge",
                           judge=dict(JUDGE, api_base=judge_server.url)) as gw:
        headers, answer = chat(gw)
        assert answer.choices[0].message.content == STUDENT_ESSAY
        row = wait_for(lambda: shadow_rows(gw, "shadow"), what="the judged row")[0]
        (call,) = judge_server.completion_calls()
    assert (row["method"], row["score"], row["verdict"]) == ("judge", 1.0, 1)
    assert row["judge_cost_usd"] == pytest.approx((300 * 1.0 + 1 * 2.0) / 1e6)
    body = call.body
    assert body["model"] == "judge-model" and body["max_tokens"] == 5 and body["temperature"] == 0
    rubric = body["messages"][0]["content"]
    assert STUDENT_ESSAY in rubric and TEACHER_ESSAY in rubric and "say hi" in rubric
    assert rubric.rstrip().endswith("SAME or DIFFERENT.")
    assert len(teacher.completion_calls()) == 1  # the judge is its own model, not the teacher


def test_an_off_rubric_judge_is_a_counted_failure(fakes, tmp_path, judge_server):
    teacher, student = fakes
    student.set(text=STUDENT_ESSAY)
    teacher.set(text=TEACHER_ESSAY)
    judge_server.set(text="Both answers are pretty similar I would say")
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0,
                           agreement_method="answer+judge",
                           judge=dict(JUDGE, api_base=judge_server.url)) as gw:
        chat(gw)
        row = wait_for(lambda: shadow_rows(gw, "shadow"), what="the row")[0]
        assert metric(gw, "kdroute_monitor_failed_total", kind="shadow", stage="judge") == 1
    assert row["verdict"] is None and "not SAME or DIFFERENT" in row["error"]
    assert row["judge_cost_usd"] > 0  # the call was made and paid for


def test_judge_shows_the_answers_in_random_order(judge_server):
    judge_server.set(text="DIFFERENT")

    async def run():
        async with UpstreamClient() as client:  # the gateway's pooled client
            backend = HTTPBackend("judge", "judge-model", judge_server.url, None, 5.0, client)
            judge = LLMJudge(backend, Prices(1.0, 2.0), seed=11)
            return [await judge("q", "STUDENT-ANSWER", "TEACHER-ANSWER") for _ in range(40)]

    results = asyncio.run(run())
    assert all(score == 0.0 for score, _ in results)
    firsts = []
    for call in judge_server.completion_calls():
        text = call.body["messages"][0]["content"]
        firsts.append(text.index("STUDENT-ANSWER") < text.index("TEACHER-ANSWER"))
    assert 10 <= sum(firsts) <= 30  # both orders, about half each (seeded)
