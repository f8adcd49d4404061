"""The gateway over real HTTP: routing, overrides, retries, fallback, streaming and costing, with
the real `openai` SDK in front and fake OpenAI-compatible servers behind."""

import asyncio
import json

import gateway_fixtures as fx
import httpx
import openai
import pytest
from gateway_fixtures import EASY, HARD, KEYS, STUDENT, TEACHER

from kdroute.gateway.records import key_id

fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes  # this module's fixtures


def client(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=KEYS[0], max_retries=0, **kw)


def chat(gw, model="kdroute/auto", messages=EASY, headers=None, **kw):
    raw = client(gw).chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers or {}, **kw)
    return raw.headers, raw.parse()


def cost(prices, prompt, completion):
    return (prompt * prices["input_price_per_1m"] + completion * prices["output_price_per_1m"]) / 1e6


def test_router_score_picks_the_model(gw):
    h_easy, easy = chat(gw, messages=EASY)
    h_hard, hard = chat(gw, messages=HARD)
    assert easy.model == STUDENT["model"] == h_easy["x-kdroute-served-model"]
    assert hard.model == TEACHER["model"] == h_hard["x-kdroute-served-model"]
    assert easy.choices[0].message.content == "hello from the fake model"
    assert float(h_easy["x-kdroute-score"]) == pytest.approx(0.1)
    assert float(h_hard["x-kdroute-score"]) == pytest.approx(0.9)
    assert float(h_hard["x-kdroute-threshold"]) == pytest.approx(0.5)
    # Each back end got exactly its request, under its own model name (provider prefix dropped).
    assert [r.body["model"] for r in gw.student.completion_calls()] == ["small-student"]
    assert [r.body["model"] for r in gw.teacher.completion_calls()] == ["big-teacher"]
    rows = gw.rows([h_easy["x-kdroute-request-id"], h_hard["x-kdroute-request-id"]])
    easy_row, hard_row = rows[h_easy["x-kdroute-request-id"]], rows[h_hard["x-kdroute-request-id"]]
    assert (easy_row["served_role"], easy_row["route_reason"]) == ("student", "router")
    assert (hard_row["served_role"], hard_row["route_reason"]) == ("teacher", "router")
    assert hard_row["router_score"] == pytest.approx(0.9)
    assert hard_row["threshold"] == pytest.approx(0.5)
    assert hard_row["router_version"] == "keyword-test-1"
    assert hard_row["key_id"] == key_id(KEYS[0]) and hard_row["status"] == 200


@pytest.mark.parametrize("model, header, messages, role, reason, threshold", [
    ("kdroute/teacher", None, EASY, "teacher", "override", None),
    ("kdroute/student", None, HARD, "student", "override", None),
    ("kdroute/auto@0.95", None, HARD, "student", "router", 0.95),
    ("kdroute/auto@0.05", None, EASY, "teacher", "router", 0.05),
    ("kdroute/auto", "kdroute/teacher", EASY, "teacher", "override", None),
    ("kdroute/teacher", "kdroute/auto@0.95", HARD, "student", "router", 0.95),
    ("kdroute/student", "auto", HARD, "teacher", "router", 0.5),
])
def test_overrides(gw, model, header, messages, role, reason, threshold):
    headers = {"x-kdroute-route": header} if header else {}
    h, answer = chat(gw, model=model, messages=messages, headers=headers)
    served = TEACHER["model"] if role == "teacher" else STUDENT["model"]
    assert answer.model == served == h["x-kdroute-served-model"]
    row = gw.row(h["x-kdroute-request-id"])
    assert (row["served_role"], row["route_reason"], row["requested_model"]) == (role, reason, model)
    if threshold is None:
        assert row["threshold"] is None and "x-kdroute-threshold" not in h
    else:
        assert row["threshold"] == pytest.approx(threshold)
        assert float(h["x-kdroute-threshold"]) == pytest.approx(threshold)


def test_fallback_when_the_student_fails(gw):
    gw.student.set(fail_next=100, fail_status=500)
    h, answer = chat(gw, messages=EASY)
    assert answer.model == TEACHER["model"] and answer.choices[0].message.content
    assert len(gw.student.completion_calls()) == 1 + STUDENT["max_retries"]  # 5xx is retried
    row = gw.row(h["x-kdroute-request-id"])
    assert (row["served_role"], row["route_reason"], row["fallback"]) == ("teacher", "fallback", 1)
    assert row["status"] == 200 and "500" in row["error"]


def test_fallback_when_the_student_times_out(gw):
    gw.student.set(latency_s=10)
    h, answer = chat(gw, messages=EASY)
    assert answer.model == TEACHER["model"]
    assert len(gw.student.completion_calls()) == 1  # a timeout is not retried
    row = gw.row(h["x-kdroute-request-id"])
    assert row["fallback"] == 1 and "timed out" in row["error"]


@pytest.mark.parametrize("status, retry_after", [(429, "0"), (503, None), (502, None)])
def test_retries_on_429_and_5xx(gw, status, retry_after):
    gw.teacher.set(fail_next=2, fail_status=status, retry_after=retry_after)
    h, answer = chat(gw, model="kdroute/teacher")
    assert answer.choices[0].message.content == "hello from the fake model"
    assert len(gw.teacher.completion_calls()) == 3
    assert gw.row(h["x-kdroute-request-id"])["fallback"] == 0


def test_no_retry_on_400(gw):
    gw.teacher.set(fail_next=1, fail_status=400)
    with pytest.raises(openai.BadRequestError) as info:
        chat(gw, model="kdroute/teacher")
    assert "teacher failed on purpose" in info.value.message
    assert len(gw.teacher.completion_calls()) == 1
    # A student 400 is not retried either, but the teacher still answers the client.
    gw.student.set(fail_next=1, fail_status=400)
    h, answer = chat(gw, model="kdroute/student")
    assert answer.model == TEACHER["model"] and len(gw.student.completion_calls()) == 1


def test_retry_after_beyond_the_bound_is_not_waited_for(gw):
    gw.teacher.set(fail_next=5, fail_status=429, retry_after="3600")
    with pytest.raises(openai.InternalServerError) as info:
        chat(gw, model="kdroute/teacher")
    assert info.value.status_code == 503
    assert len(gw.teacher.completion_calls()) == 1


@pytest.mark.parametrize("behaviour, status, code", [
    ({"fail_next": 10, "fail_status": 500}, 502, "upstream_error"),
    ({"fail_next": 10, "fail_status": 503}, 503, "upstream_unavailable"),
    ({"fail_next": 10, "fail_status": 401}, 502, "upstream_error"),
    ({"latency_s": 10}, 504, "upstream_timeout"),
])
def test_teacher_failures_are_openai_shaped_5xx(gw, behaviour, status, code):
    gw.teacher.set(**behaviour)
    resp = httpx.post(gw.v1 + "/chat/completions", json={"model": "kdroute/auto",
                      "messages": HARD}, headers={"authorization": f"Bearer {KEYS[1]}"},
                      timeout=30)
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and "Traceback" not in resp.text
    assert gw.row(resp.headers["x-kdroute-request-id"])["status"] == status


def test_streaming_with_the_openai_sdk(gw):
    gw.student.set(prompt_tokens=11, completion_tokens=7)
    raw = client(gw).chat.completions.with_raw_response.create(
        model="kdroute/auto", messages=EASY, stream=True, stream_options={"include_usage": True})
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello from the fake model"
    assert {c.model for c in chunks} == {STUDENT["model"]}
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 7
    row = gw.row(raw.headers["x-kdroute-request-id"])
    assert row["stream"] == 1 and row["ttft_ms"] is not None and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 7)
    assert row["response_text"] == text
    # Without include_usage the client gets no usage chunk, but the ledger still has tokens.
    plain = list(client(gw).chat.completions.create(model="kdroute/student", messages=EASY,
                                                    stream=True))
    assert all(c.usage is None for c in plain)


def test_stream_falls_back_before_the_first_byte(gw):
    gw.student.set(fail_next=100, fail_status=503)
    raw = client(gw).chat.completions.with_raw_response.create(
        model="kdroute/student", messages=EASY, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "hello from the fake model"
    assert raw.headers["x-kdroute-served-model"] == TEACHER["model"]
    assert gw.row(raw.headers["x-kdroute-request-id"])["fallback"] == 1


def test_mid_stream_failure_ends_with_an_error_event(gw):
    gw.student.set(stream_break_after=2)
    with httpx.stream("POST", gw.v1 + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {KEYS[0]}"},
                      json={"model": "kdroute/student", "messages": EASY, "stream": True}) as resp:
        assert resp.status_code == 200
        events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
        request_id = resp.headers["x-kdroute-request-id"]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
    deltas = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert "".join(deltas) == "hello from"
    row = gw.row(request_id)
    # What the client saw: a 200, then an error event (issue 13, defect 9: was logged as 502).
    assert row["status"] == 200 and row["stream_outcome"] == "upstream_error"
    assert row["error"].startswith("502 upstream_error") and row["response_text"] == "hello from"
    gw.student.set(stream_break_after=1)
    with pytest.raises(openai.APIError):
        list(client(gw).chat.completions.create(model="kdroute/student", messages=EASY,
                                                stream=True))


def test_async_client_concurrent_requests_each_get_one_row(gw):
    async def main():
        aclient = openai.AsyncOpenAI(base_url=gw.v1, api_key=KEYS[1], max_retries=0)
        prompts = [HARD if i % 3 == 0 else EASY for i in range(24)]
        raws = await asyncio.gather(*(aclient.chat.completions.with_raw_response.create(
            model="kdroute/auto", messages=p) for p in prompts))
        await aclient.close()
        return prompts, raws

    prompts, raws = asyncio.run(main())
    ids = [r.headers["x-kdroute-request-id"] for r in raws]
    rows = gw.rows(ids)
    assert len(rows) == len(set(ids)) == 24
    for prompt, request_id in zip(prompts, ids, strict=True):
        assert rows[request_id]["served_role"] == ("teacher" if prompt is HARD else "student")
        assert rows[request_id]["key_id"] == key_id(KEYS[1])


def test_cost_and_savings_equal_the_hand_computed_values(gw):
    gw.student.set(prompt_tokens=1234, completion_tokens=567)
    gw.teacher.set(prompt_tokens=1000, completion_tokens=200)
    h_student, _ = chat(gw, messages=EASY)
    h_teacher, _ = chat(gw, messages=HARD)
    gw.student.set(fail_next=100, fail_status=503)
    h_fallback, _ = chat(gw, messages=EASY)
    rows = gw.rows([h["x-kdroute-request-id"] for h in (h_student, h_teacher, h_fallback)])
    student = rows[h_student["x-kdroute-request-id"]]
    assert student["cost_usd"] == pytest.approx(cost(STUDENT, 1234, 567), rel=1e-12)
    assert student["teacher_cost_usd"] == pytest.approx(cost(TEACHER, 1234, 567), rel=1e-12)
    assert student["teacher_cost_usd"] - student["cost_usd"] == pytest.approx(
        (1234 * 4.9 + 567 * 14.7) / 1e6, rel=1e-9)  # savings
    teacher = rows[h_teacher["x-kdroute-request-id"]]
    assert teacher["cost_usd"] == teacher["teacher_cost_usd"] == pytest.approx(
        cost(TEACHER, 1000, 200), rel=1e-12)
    fallback = rows[h_fallback["x-kdroute-request-id"]]  # paid at teacher prices: no savings
    assert fallback["cost_usd"] == fallback["teacher_cost_usd"] == pytest.approx(
        cost(TEACHER, 1000, 200), rel=1e-12)


def test_completions_endpoint(gw):
    raw = client(gw).completions.with_raw_response.create(model="kdroute/auto", prompt="hard sum")
    answer = raw.parse()
    assert answer.choices[0].text == "hello from the fake model"
    assert answer.model == TEACHER["model"]
    assert gw.teacher.completion_calls()[-1].path == "/v1/completions"
    stream = client(gw).completions.create(model="kdroute/student", prompt="hi", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "hello from the fake model"
    assert gw.row(raw.headers["x-kdroute-request-id"])["endpoint"] == "completions"
