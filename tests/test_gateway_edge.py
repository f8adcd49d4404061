"""The gateway's edges over real HTTP: every error shape, keys, the ledger's completeness, /metrics,
client disconnects, curl, and `kdroute serve` itself."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import gateway_fixtures as fx
import httpx
import openai
import pytest
from fake_openai import AppServer
from gateway_fixtures import EASY, HARD, KEYS, KeywordRouter, make_settings
from prometheus_client.parser import text_string_to_metric_families

from kdroute.errors import ConfigError

fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes  # this module's fixtures
AUTH = {"authorization": f"Bearer {KEYS[0]}"}
CHAT = {"model": "kdroute/auto", "messages": EASY}


def post(gw, body=None, content=None, headers=AUTH, path="/v1/chat/completions"):
    return httpx.post(gw.url + path, json=body, content=content, headers=headers, timeout=30)


def assert_openai_error(resp, status, param=None, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "Traceback" not in resp.text
    assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize("kwargs, status, param, code", [
    ({"content": b'{"model": "kdroute/auto", "messages": ['}, 400, None, "invalid_json"),
    ({"content": b"\xff\xfe not utf-8"}, 400, None, "invalid_json"),
    ({"body": ["not", "an", "object"]}, 400, None, "invalid_body"),
    ({"body": {"model": "kdroute/auto"}}, 400, "messages", "invalid_value"),
    ({"body": {"model": "kdroute/auto", "messages": []}}, 400, "messages", "invalid_value"),
    ({"body": {"messages": EASY}}, 400, "model", "invalid_value"),
    ({"body": dict(CHAT, temperature="hot")}, 400, "temperature", "invalid_value"),
    ({"body": dict(CHAT, max_tokens=0)}, 400, "max_tokens", "invalid_value"),
    ({"body": dict(CHAT, messages=[{"role": "wizard", "content": "x"}])}, 400,
     "messages.0.role", "invalid_value"),
    ({"body": dict(CHAT, model="gpt-4o")}, 404, "model", "model_not_found"),
    ({"body": dict(CHAT, model="kdroute/teacher@0.3")}, 404, "model", "model_not_found"),
    ({"body": dict(CHAT, model="kdroute/auto@1.5")}, 400, "model", "invalid_value"),
    ({"body": dict(CHAT, model="kdroute/auto@abc")}, 400, "model", "invalid_value"),
    ({"body": CHAT, "headers": dict(AUTH, **{"x-kdroute-route": "kdroute/oracle"})}, 404,
     "x-kdroute-route", "model_not_found"),
    ({"body": dict(CHAT, messages=[{"role": "user", "content": "x" * 5000}])}, 413, None,
     "request_too_large"),
    ({"body": CHAT, "headers": {}}, 401, None, "missing_api_key"),
    ({"body": CHAT, "headers": {"authorization": "Bearer sk-wrong-key-000000000"}}, 401, None,
     "invalid_api_key"),
    ({"body": CHAT, "headers": {"authorization": KEYS[0]}}, 401, None, "missing_api_key"),
    ({"body": {"model": "kdroute/auto"}, "path": "/v1/completions"}, 400, "prompt",
     "invalid_value"),
    ({"body": CHAT, "path": "/v1/nothing-here"}, 404, None, "unknown_url"),
])
def test_every_error_is_openai_shaped(gw, kwargs, status, param, code):
    resp = post(gw, **kwargs)
    assert_openai_error(resp, status, param, code)
    if kwargs.get("path", "/v1/chat/completions").endswith("completions"):
        row = gw.row(resp.headers["x-kdroute-request-id"])
        assert row["status"] == status and row["served_role"] is None and row["cost_usd"] == 0
    assert not gw.teacher.completion_calls() and not gw.student.completion_calls()


def test_openai_sdk_sees_typed_errors(gw):
    bad_key = openai.OpenAI(base_url=gw.v1, api_key="sk-not-a-valid-key-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="kdroute/auto", messages=EASY)
    good = openai.OpenAI(base_url=gw.v1, api_key=KEYS[0], max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        good.chat.completions.create(model="gpt-4o", messages=EASY)
    assert info.value.body["param"] == "model"
    assert [m.id for m in good.models.list()] == ["kdroute/auto", "kdroute/teacher",
                                                 "kdroute/student"]


def test_health_ready_and_a_body_over_the_limit_without_length(gw):
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/ready", headers=AUTH).json()
    assert ready["backends"] == {"teacher": True, "student": True}

    def chunks():  # chunked upload: no content-length to check up front
        yield b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    assert_openai_error(post(gw, content=chunks()), 413, None, "request_too_large")


def test_ready_reports_an_unreachable_backend(fakes, tmp_path):
    from kdroute.gateway import create_app

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    settings = make_settings(fakes[0].url, dead_url, tmp_path / "ledger.db")
    with AppServer(create_app(settings, router=KeywordRouter(), env={})) as server:
        resp = httpx.get(server.url + "/ready")
        assert resp.status_code == 503 and resp.json()["backends"]["student"] is False
        assert resp.json()["error"]["code"] == "not_ready"
        # No keys configured: requests need none; the dead student falls back to the teacher.
        answer = httpx.post(server.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert answer.status_code == 200
        assert answer.headers["x-kdroute-served-model"] == fx.TEACHER["model"]
    closed.close()


def test_client_disconnect_cancels_the_backend_call(gw):
    before = gw.query("SELECT count(*) AS n FROM requests WHERE status = 499")[0]["n"]
    gw.teacher.set(latency_s=30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.v1 + "/chat/completions", json=dict(CHAT, model="kdroute/teacher"),
                   headers=AUTH, timeout=httpx.Timeout(30, read=0.3))
    deadline = time.monotonic() + 10
    while gw.teacher.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.teacher.disconnects == 1  # the gateway hung up on the back end: call cancelled
    while time.monotonic() < deadline:
        rows = gw.query("SELECT * FROM requests WHERE status = 499")
        if len(rows) > before:
            break
        time.sleep(0.05)
    assert len(rows) == before + 1 and rows[-1]["error"] == "client disconnected"


def test_streaming_client_disconnect_cancels_the_backend_stream(gw):
    gw.student.set(text="a b c d e f g h i j k l", chunk_delay_s=0.5)
    with httpx.stream("POST", gw.v1 + "/chat/completions", headers=AUTH, timeout=30,
                      json=dict(CHAT, model="kdroute/student", stream=True)) as resp:
        first = next(resp.iter_lines())
        assert first.startswith("data: ")
        request_id = resp.headers["x-kdroute-request-id"]
    deadline = time.monotonic() + 10
    while gw.student.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.student.disconnects == 1
    row = gw.row(request_id)
    # The client saw a 200, then left: status 200, outcome client_disconnected (was 499).
    assert row["status"] == 200 and row["stream_outcome"] == "client_disconnected"
    assert row["stream"] == 1 and row["response_text"].startswith("a")


def test_curl(gw):
    body = json.dumps({"model": "kdroute/auto", "messages": HARD})
    out = subprocess.run(["curl", "-sS", "-D", "-", gw.v1 + "/chat/completions",
                          "-H", "Content-Type: application/json",
                          "-H", f"Authorization: Bearer {KEYS[1]}", "-d", body],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    head, _, payload = out.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200")
    assert "x-kdroute-served-model: openai/big-teacher" in head.lower()
    assert json.loads(payload)["choices"][0]["message"]["content"] == "hello from the fake model"
    stream = subprocess.run(["curl", "-sS", "-N", gw.v1 + "/chat/completions",
                             "-H", f"Authorization: Bearer {KEYS[1]}",
                             "-H", "Content-Type: application/json",
                             "-d", json.dumps(dict(CHAT, stream=True))],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    events = [line for line in stream.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3


def test_request_rows_equal_requests_sent(gw):
    total = lambda: gw.query("SELECT count(*) AS n FROM requests")[0]["n"]  # noqa: E731
    gw.rows([post(gw, CHAT).headers["x-kdroute-request-id"]])  # the writer has caught up
    before = total()
    sent = [post(gw, CHAT), post(gw, dict(CHAT, messages=HARD)), post(gw, {"model": "x"}),
            post(gw, CHAT, headers={}), post(gw, dict(CHAT, stream=True)),
            post(gw, {"model": "kdroute/student", "prompt": "hi"}, path="/v1/completions")]
    ids = [r.headers["x-kdroute-request-id"] for r in sent]
    assert len(gw.rows(ids)) == len(sent) == len(set(ids))
    time.sleep(0.3)  # several flush intervals: nothing else may appear
    assert total() == before + len(sent)


def test_metrics_parse_as_prometheus_text(gw):
    post(gw, CHAT)
    text = httpx.get(gw.url + "/metrics", headers=AUTH).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("kdroute_requests", "kdroute_request_latency_seconds", "kdroute_routed",
                 "kdroute_cost_usd", "kdroute_teacher_equivalent_cost_usd", "kdroute_savings_usd",
                 "kdroute_writer_queue_depth", "kdroute_writer_dropped_rows",
                 "kdroute_backend_retries", "kdroute_fallbacks"):
        assert name in families, name
    served = [s for s in families["kdroute_requests"].samples
              if s.name == "kdroute_requests_total" and s.labels["status"] == "200"]
    assert {s.labels["role"] for s in served} == {"teacher", "student"}
    assert sum(s.value for s in families["kdroute_savings_usd"].samples
               if s.name.endswith("_total")) > 0
    assert families["kdroute_writer_dropped_rows"].samples[0].value == 0


def test_keys_never_reach_the_ledger_or_logs(gw, caplog):
    leaky = f"my key is {KEYS[0]} and header Authorization: Bearer {KEYS[1]}"
    resp = post(gw, dict(CHAT, messages=[{"role": "user", "content": leaky}]))
    row = gw.row(resp.headers["x-kdroute-request-id"])
    assert "[REDACTED]" in row["prompt_text"] and row["key_id"] and len(row["key_id"]) == 12
    post(gw, CHAT, headers={"authorization": "Bearer sk-wrong-but-secret-999999"})
    gw.app.state.gateway.writer.close()  # flush everything, then read the raw files
    gw.app.state.gateway.writer.start()
    raw = b"".join(p.read_bytes() for p in gw.db.parent.rglob("*") if p.is_file())  # + spool
    assert b"hello from the fake model" in raw  # the text really is stored...
    for secret in (*KEYS, "sk-wrong-but-secret-999999"):
        assert secret.encode() not in raw  # ...but never a key
        assert secret not in caplog.text


def test_bind_refuses_a_public_host_without_keys(tmp_path):
    from kdroute.gateway.app import check_bind

    settings = make_settings("http://x/v1", "http://y/v1", tmp_path / "l.db", host="0.0.0.0")
    with pytest.raises(ConfigError, match="no API key"):
        check_bind(settings, ())
    check_bind(settings, ("sk-some-key-12345678",))
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(make_settings("http://x/v1", "http://y/v1", tmp_path / "l.db", host=host), ())


def test_kdroute_serve_runs_the_gateway(fakes, tmp_path):
    teacher, student = fakes
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[teacher]\nmodel = "openai/big-teacher"\napi_base = "{teacher.url}"\n'
        'input_price_per_1m = 5.0\noutput_price_per_1m = 15.0\n'
        f'[student]\nmodel = "hosted_vllm/small-student"\napi_base = "{student.url}"\n'
        'input_price_per_1m = 0.1\noutput_price_per_1m = 0.3\n'
        '[store]\npath = "ledger.db"\n')
    env = dict(os.environ, KDROUTE_API_KEYS="")
    refused = subprocess.run([sys.executable, "-m", "kdroute", "--config", str(config), "serve",
                              "--host", "0.0.0.0"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "no API key" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "kdroute", "--config", str(config), "serve",
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url + "/health", proc)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="kdroute/student", messages=EASY)
        assert answer.model == "hosted_vllm/small-student"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    from kdroute.store import Store

    with Store(tmp_path / "ledger.db") as store:  # the writer flushed at shutdown
        assert store.count("requests") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kdroute serve exited: {proc.communicate()[1]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("kdroute serve did not come up")


def test_listeners_receive_every_finished_record(fakes, tmp_path):
    """The hook the monitor consumes: each finished request record, with the conversation and
    the answer in memory; a failing listener never breaks serving."""
    from kdroute.gateway import create_app

    seen = []

    def broken(record):
        raise RuntimeError("listener bug")

    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "ledger.db")
    app = create_app(settings, router=KeywordRouter(), env={}, listeners=[broken, seen.append])
    with AppServer(app) as server:
        ok = httpx.post(server.url + "/v1/chat/completions", json=CHAT, timeout=30)
        bad = httpx.post(server.url + "/v1/chat/completions", json={"model": "x"}, timeout=30)
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert [r.id for r in seen] == [ok.headers["x-kdroute-request-id"],
                                    bad.headers["x-kdroute-request-id"]]
    assert seen[0].served_role == "student" and seen[0].conversation == EASY
    assert seen[0].response_text == "hello from the fake model"
