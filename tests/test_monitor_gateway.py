"""The monitor inside the gateway, over real HTTP: shadow evaluations never touch what the client
gets, a slow or failing shadow teacher only moves counters, the breaker sends the student's share
to the teacher while a quality alert is open and probes the student meanwhile, two gateway
workers on one ledger agree on the breaker, and the ledger's net savings are what they should be.

The fakes are real HTTP servers (tests/fake_openai.py); the router is the keyword router (easy
prompts 0.1 -> student, "hard" 0.9 -> teacher)."""

import gateway_fixtures as fx
import pytest
from gateway_fixtures import EASY, HARD, STUDENT, TEACHER
from monitor_fixtures import chat, metric, monitored_gateway, open_alerts, shadow_rows, wait_for

from kdroute.store import Store

fakes, _reset_fakes = fx.fakes, fx._reset_fakes  # this module's fixtures


def usage_cost(prices, prompt=100, completion=50):  # the fakes report 100 + 50 tokens
    return (prompt * prices["input_price_per_1m"] + completion * prices["output_price_per_1m"]) / 1e6


def test_shadow_call_is_the_conversation_alone_and_the_client_answer_is_untouched(fakes, tmp_path):
    teacher, student = fakes
    student.set(text="The answer is 42.")
    teacher.set(text="So the total is 40 + 2 = 42.")
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0) as gw:
        # a client trying to steer the shadow call with its own sampling, limits and fields
        # (provider arguments such as api_base are refused at the edge: test_gateway_attack)
        headers, answer = chat(gw, messages=EASY, temperature=1.3, max_tokens=7, seed=5,
                               extra_body={"user": "u1"})
        assert answer.choices[0].message.content == "The answer is 42."
        assert answer.model == STUDENT["model"]
        assert headers["x-kdroute-route-reason"] == "router"
        assert headers["x-kdroute-slice"] == "all" and "x-kdroute-breaker" not in headers
        rows = wait_for(lambda: shadow_rows(gw, "shadow"), what="the shadow row")
        assert len(student.completion_calls()) == 1
    shadow_call = teacher.completion_calls()[0].body
    assert shadow_call == {"messages": EASY, "max_tokens": 512, "temperature": 0,
                           "model": "big-teacher", "stream": False}
    row = rows[0]
    assert row["request_id"] == headers["x-kdroute-request-id"]
    assert (row["status"], row["method"], row["verdict"], row["agreement"]) == \
        ("ok", "answer", 1, 1.0)
    assert row["inclusion_prob"] == 1.0 and row["router_score"] == pytest.approx(0.1)
    assert row["teacher_cost_usd"] == pytest.approx(usage_cost(TEACHER))
    assert row["student_cost_usd"] == 0.0 and row["slice"] == "all"
    assert (row["teacher_model"], row["student_model"]) == (TEACHER["model"], STUDENT["model"])
    assert row["prompt_text"] is None and row["teacher_response"] is None  # store_pairs is off


def test_streamed_answers_are_shadowed_and_pairs_stored_when_asked(fakes, tmp_path):
    teacher, student = fakes
    student.set(text="It is 12.")
    teacher.set(text="It is 13.")
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0, store_pairs=True) as gw:
        client = __import__("openai").OpenAI(base_url=gw.v1, api_key=fx.KEYS[0], max_retries=0)
        stream = client.chat.completions.create(model="kdroute/auto", messages=EASY, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
            "It is 12."
        row = wait_for(lambda: shadow_rows(gw, "shadow"), what="the shadow row")[0]
    assert (row["method"], row["verdict"]) == ("answer", 0)
    assert (row["prompt_text"], row["student_response"], row["teacher_response"]) == \
        ("say hi", "It is 12.", "It is 13.")


def test_slow_shadow_teacher_leaves_clients_alone_and_drops_overflow(fakes, tmp_path):
    teacher, student = fakes
    teacher.set(latency_s=2.5)  # slower than every client request below, within its timeout
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0, shadow_concurrency=1,
                           shadow_queue_size=1) as gw:
        answers = [chat(gw)[1] for _ in range(5)]
        # every client got the student's answer while the first shadow call was still waiting
        # on the teacher: no shadow row is written yet
        assert all(a.choices[0].message.content == "hello from the fake model" for a in answers)
        assert shadow_rows(gw) == []
        assert len(teacher.completion_calls()) == 1
        # one call in flight, one queued, the other three dropped and counted
        assert metric(gw, "kdroute_monitor_dropped_total", kind="shadow",
                      reason="queue_full") == 3
        assert metric(gw, "kdroute_monitor_sampled_total", kind="shadow") == 5
        rows = wait_for(lambda: len(shadow_rows(gw)) == 2 and shadow_rows(gw),
                        what="both shadow rows")
    assert [r["status"] for r in rows] == ["ok", "ok"]


def test_failing_shadow_teacher_is_a_counted_failure_not_a_client_error(fakes, tmp_path):
    teacher, _ = fakes
    teacher.set(fail_next=100, fail_status=500)
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0) as gw:
        for _ in range(3):
            headers, answer = chat(gw)
            assert answer.choices[0].message.content == "hello from the fake model"
        rows = wait_for(lambda: len(shadow_rows(gw)) == 3 and shadow_rows(gw), what="3 rows")
        assert metric(gw, "kdroute_monitor_failed_total", kind="shadow", stage="upstream") == 3
        statuses = gw.query("SELECT status FROM requests")
    assert [r["status"] for r in statuses] == [200, 200, 200]
    assert all(r["status"] == "failed" and "500" in r["error"] and r["verdict"] is None
               for r in rows)
    assert len(teacher.completion_calls()) == 3  # a shadow call is never retried


def test_daily_budget_drops_what_it_cannot_pay_for(fakes, tmp_path):
    one_call = usage_cost(TEACHER)
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0,
                           shadow_budget_usd=1.5 * one_call) as gw:
        for _ in range(3):
            chat(gw)
        wait_for(lambda: metric(gw, "kdroute_monitor_dropped_total", kind="shadow",
                                reason="budget") == 2, what="two budget drops")
        assert len(shadow_rows(gw)) == 1


def test_net_savings_in_the_ledger_equal_the_hand_computed_value(fakes, tmp_path):
    with monitored_gateway(fakes, tmp_path / "l.db", shadow_rate=1.0) as gw:
        for messages in (EASY, EASY, HARD, EASY):
            chat(gw, messages=messages)
        wait_for(lambda: len(shadow_rows(gw)) == 3, what="three shadow rows")
        gw.rows([r["id"] for r in gw.query("SELECT id FROM requests")])
    student_cost, teacher_cost = usage_cost(STUDENT), usage_cost(TEACHER)
    # 3 student-served requests save (teacher - student) each, the hard one saves nothing, and
    # each of the 3 shadow answers costs one teacher call
    gross = 3 * (teacher_cost - student_cost)
    monitor_cost = 3 * teacher_cost
    with Store(tmp_path / "l.db") as store:
        savings = store.savings()
    assert savings["requests"] == 4
    assert savings["gross_usd"] == pytest.approx(gross, rel=1e-12)
    assert savings["monitor_cost_usd"] == pytest.approx(monitor_cost, rel=1e-12)
    assert savings["net_usd"] == pytest.approx(gross - monitor_cost, rel=1e-12)


BREAKER = {"shadow_rate": 1.0, "probe_rate": 1.0, "window": 20, "min_samples": 10,
           "agreement_floor": 0.8}


def break_the_student(gw, n: int = 10):
    """The student answers wrong: n disagreeing shadow pairs, then the quality alert."""
    gw.student.set(text="The answer is 7.")
    gw.teacher.set(text="The answer is 42.")
    for _ in range(n):
        chat(gw)
    return wait_for(lambda: [a for a in open_alerts(gw) if a["kind"] == "quality"
                             and a["slice"] == "all"], what="the quality alert")[0]


def test_breaker_routes_to_the_teacher_while_open_probes_and_releases(fakes, tmp_path):
    teacher, student = fakes
    webhook = fx.FakeOpenAI("webhook").start()
    try:
        with monitored_gateway(fakes, tmp_path / "l.db", **BREAKER,
                               webhook_url=webhook.url + "/hook") as gw:
            alert = break_the_student(gw)
            assert alert["value"] == 0.0 and alert["n"] == 10 and alert["bound"] < 0.8
            wait_for(lambda: metric(gw, "kdroute_monitor_breaker_open", slice="all") == 1,
                     what="the breaker")
            student_calls = len(student.completion_calls())
            headers, answer = chat(gw)
            assert answer.model == TEACHER["model"] and answer.choices[0].message.content == \
                "The answer is 42."
            assert headers["x-kdroute-route-reason"] == "breaker"
            assert headers["x-kdroute-breaker"] == "open"
            row = gw.row(headers["x-kdroute-request-id"])
            assert (row["served_role"], row["route_reason"]) == ("teacher", "breaker")
            # the student still answers the same request, in the background: a probe
            probe = wait_for(lambda: shadow_rows(gw, "probe"), what="a probe")[0]
            assert len(student.completion_calls()) == student_calls + 1
            assert (probe["request_id"], probe["verdict"]) == (row["id"], 0)
            assert probe["student_cost_usd"] == pytest.approx(usage_cost(STUDENT))
            # an explicit request for the student is honoured even now
            assert chat(gw, model="kdroute/student")[1].model == STUDENT["model"]
            # the student recovers: probes agree, the alert resolves, the breaker closes
            student.set(text="The answer is 42.")
            for _ in range(20):
                chat(gw)
            wait_for(lambda: not [a for a in open_alerts(gw) if a["kind"] == "quality"],
                     what="the alert to resolve")
            wait_for(lambda: metric(gw, "kdroute_monitor_breaker_open", slice="all") == 0,
                     what="the breaker to close")
            headers, answer = chat(gw)
            assert answer.model == STUDENT["model"] and headers["x-kdroute-route-reason"] == \
                "router"
            assert metric(gw, "kdroute_monitor_breaker_switches_total", slice="all",
                          state="closed") == 1
            hooks = wait_for(lambda: [r.body for r in webhook.received
                                      if r.path.endswith("/hook")], what="webhook posts")
            events = {(h["event"], h["alert"]["kind"], h["alert"]["slice"]) for h in hooks}
            assert ("alert_opened", "quality", "all") in events
            wait_for(lambda: ("alert_resolved", "quality", "all") in {
                (r.body["event"], r.body["alert"]["kind"], r.body["alert"]["slice"])
                for r in webhook.received}, what="the resolution webhook")
    finally:
        webhook.stop()


def test_two_workers_on_one_ledger_see_the_same_breaker(fakes, tmp_path):
    db = tmp_path / "shared.db"
    with monitored_gateway(fakes, db, **BREAKER) as a, \
            monitored_gateway(fakes, db, **dict(BREAKER, shadow_rate=0.0)) as b:
        break_the_student(a)
        for gw in (a, b):  # both read the alert from the ledger and break alike
            wait_for(lambda gw=gw: metric(gw, "kdroute_monitor_breaker_open", slice="all") == 1,
                     what="both breakers")
            headers, answer = chat(gw)
            assert headers["x-kdroute-route-reason"] == "breaker"
        assert len(open_alerts(a)) >= 1
        assert len([r for r in open_alerts(a) if r["kind"] == "quality" and r["slice"] == "all"]) \
            == 1  # opened once, whichever worker wrote first
        a.student.set(text="The answer is 42.")
        for _ in range(12):  # probes from both workers count towards recovery
            chat(a)
            chat(b)
        wait_for(lambda: not [r for r in open_alerts(a) if r["kind"] == "quality"],
                 what="the alert to resolve")
        for gw in (a, b):
            wait_for(lambda gw=gw: metric(gw, "kdroute_monitor_breaker_open", slice="all") == 0,
                     what="both breakers to close")
            assert chat(gw)[0]["x-kdroute-route-reason"] == "router"
        kinds = {r["kind"] for r in shadow_rows(a)}
    assert kinds == {"shadow", "probe"}


def test_dead_webhook_is_counted_and_serving_goes_on(fakes, tmp_path):
    with monitored_gateway(fakes, tmp_path / "l.db", **BREAKER,
                           webhook_url="http://127.0.0.1:9/hook", webhook_retries=1,
                           webhook_timeout_s=0.5) as gw:
        break_the_student(gw)
        wait_for(lambda: metric(gw, "kdroute_monitor_webhook_total", outcome="failed") >= 1,
                 what="the webhook failure")
        headers, answer = chat(gw)
        assert answer.choices[0].message.content and headers["x-kdroute-route-reason"] == \
            "breaker"


def test_family_slices_from_bench_samples_break_only_their_family(fakes, tmp_path):
    db = tmp_path / "l.db"
    with Store(db) as store:
        run = store.start_run("bench")
        samples = [{"task": "t", "doc_id": i, "prompt": f"What is {i} plus {i + 3}?",
                    "family": "arith", "role": "teacher"} for i in range(40)]
        samples += [{"task": "t", "doc_id": 100 + i, "prompt": f"Say hello to my friend {name}.",
                     "family": "chat", "role": "teacher"}
                    for i, name in enumerate(["Ann", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal",
                                              "Ivy", "Jo", "Kim", "Lu", "Mo", "Ned", "Oz", "Pam"]
                                             * 2)]
        store.save_bench(run, [], samples)
        store.finish_run(run)
        # a quality alert on the arithmetic family only (as a detector would have opened it)
        store.open_alert_once({"kind": "quality", "slice": "family:arith", "value": 0.5,
                               "bound": 0.7, "n": 60, "window": 200, "threshold": 0.8})
    arith = [{"role": "user", "content": "What is 17 plus 25?"}]
    chat_prompt = [{"role": "user", "content": "Say hello to my friend Zoe."}]
    with monitored_gateway(fakes, db) as gw:
        headers = wait_for(lambda: (h := chat(gw, messages=arith)[0])["x-kdroute-slice"]
                           == "family:arith" and h, what="the family classifier")
        assert headers["x-kdroute-route-reason"] == "breaker"
        assert headers["x-kdroute-served-model"] == TEACHER["model"]
        other, answer = chat(gw, messages=chat_prompt)
        assert other["x-kdroute-slice"] == "family:chat"
        assert other["x-kdroute-route-reason"] == "router" and answer.model == STUDENT["model"]
        row = gw.row(other["x-kdroute-request-id"])
    assert row["slice"] == "family:chat"


def test_two_workers_share_one_daily_budget_through_the_ledger(fakes, tmp_path):
    db = tmp_path / "shared.db"
    one_call = usage_cost(TEACHER)
    budget = {"shadow_rate": 1.0, "shadow_budget_usd": 2.5 * one_call}
    with monitored_gateway(fakes, db, **budget) as a, monitored_gateway(fakes, db, **budget) as b:
        chat(a)
        chat(a)
        wait_for(lambda: len(shadow_rows(a)) == 2, what="worker a's two shadow rows")
        # b has spent nothing itself, but reads a's spend from the ledger: half a call is left
        wait_for(lambda: metric(b, "kdroute_monitor_spent_today_usd") >= 2 * one_call * 0.999,
                 what="b to see a's spend")
        chat(b)
        wait_for(lambda: metric(b, "kdroute_monitor_dropped_total", kind="shadow",
                                reason="budget") == 1, what="b's budget drop")
        assert len(shadow_rows(a)) == 2
