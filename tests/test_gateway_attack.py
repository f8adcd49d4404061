"""Issue 13, over real HTTP: what an attacker or an unlucky client sends. Each test names the
numbered defect it closes (security 1-3, bad input and honest statuses 8-11)."""

import json
import logging
import socket
import sys

import gateway_fixtures as fx
import httpx
import pytest
from fake_openai import AppServer, FakeOpenAI
from gateway_fixtures import EASY, KEYS, STUDENT, KeywordRouter, make_settings

from kdroute.config import Settings
from kdroute.gateway.protocol import CLIENT_FIELDS, FORBIDDEN_FIELDS, client_payload

fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes  # this module's fixtures
AUTH = {"authorization": f"Bearer {KEYS[0]}"}
CHAT = {"model": "kdroute/auto", "messages": EASY}
PROVIDER_KEY = "sk-provider-deepseek-0123456789"


def post(url, body=None, content=None, headers=AUTH, path="/v1/chat/completions", **kw):
    return httpx.post(url + path, json=body, content=content, headers=headers, timeout=30, **kw)


def assert_openai_error(resp, status, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code, body


@pytest.fixture
def litellm_gw(tmp_path, monkeypatch):
    """Teacher through litellm (`deepseek/`, provider key attached), an attacker's server."""
    monkeypatch.setenv("KDTEST_DEEPSEEK_KEY", PROVIDER_KEY)
    from kdroute.gateway import create_app

    with FakeOpenAI("deepseek") as teacher, FakeOpenAI("student") as student, \
            FakeOpenAI("attacker") as attacker:
        settings = Settings.model_validate({
            "teacher": {"model": "deepseek/deepseek-chat", "api_base": teacher.url,
                        "api_key_env": "KDTEST_DEEPSEEK_KEY", "input_price_per_1m": 1.0,
                        "output_price_per_1m": 2.0},
            "student": dict(STUDENT, api_base=student.url),
            "store": {"path": str(tmp_path / "ledger.db")},
            "gateway": {"writer_flush_interval_s": 0.05, "store_text": True}})
        app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
        with AppServer(app) as server:
            yield server, teacher, attacker


# --- 1. a client cannot redirect a provider call or invent an answer -------------------------

@pytest.mark.parametrize("field, value", [
    ("api_base", "ATTACKER"), ("base_url", "ATTACKER"), ("api_key", "sk-mine-000000000000"),
    ("mock_response", "an invented answer"), ("custom_llm_provider", "openai"),
    ("metadata", {"a": 1}), ("extra_headers", {"x": "y"}), ("num_retries", 9),
])
def test_1_litellm_arguments_are_refused(litellm_gw, field, value):
    server, teacher, attacker = litellm_gw
    value = attacker.url if value == "ATTACKER" else value
    resp = post(server.url, dict(CHAT, model="kdroute/teacher", **{field: value}))
    assert_openai_error(resp, 400, "unknown_parameter")
    assert resp.json()["error"]["param"] == field
    assert attacker.received == [] and teacher.completion_calls() == []
    assert field in FORBIDDEN_FIELDS


def test_1_allowed_fields_still_reach_the_back_end(litellm_gw):
    server, teacher, _ = litellm_gw
    body = dict(CHAT, model="kdroute/teacher", seed=7, max_tokens=5, stop=["\n"],
                response_format={"type": "json_object"})
    assert post(server.url, body).status_code == 200
    sent = teacher.completion_calls()[-1].body
    assert (sent["seed"], sent["max_tokens"], sent["stop"]) == (7, 5, ["\n"])
    assert sent["response_format"] == {"type": "json_object"}
    assert teacher.completion_calls()[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"


def test_1_the_allow_list_is_a_function_per_endpoint():
    assert client_payload("chat", {"model": "m", "messages": [], "seed": 1}) == {
        "messages": [], "seed": 1}
    assert "prompt" in CLIENT_FIELDS["completions"] and "prompt" not in CLIENT_FIELDS["chat"]
    assert client_payload("chat", {"model": "m", "top_k": 5}, extra_fields={"top_k"}) == {
        "top_k": 5}
    assert not FORBIDDEN_FIELDS & (CLIENT_FIELDS["chat"] | CLIENT_FIELDS["completions"])


def test_1_extra_body_fields_cannot_name_a_litellm_argument(tmp_path):
    from kdroute.errors import ConfigError
    from kdroute.gateway import create_app

    settings = make_settings("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1",
                             tmp_path / "l.db", extra_body_fields=["api_base"])
    with pytest.raises(ConfigError, match="extra_body_fields"):
        create_app(settings, router=KeywordRouter(), env={})


# --- 2. redaction: ledger rows, warnings, access log ------------------------------------------

SEEDED = {
    "bearer colon": "Bearer:tok9Secret", "xsk": "xsk-a1b2c3d4e5f6g7h8i9",
    "stripe": "sk_live_0123456789abcdefABCDEFgh", "upper": "SK-ABCDEF0123456789XYZ",
    "basic": "Authorization: Basic dXNlcjpodW50ZXIy", "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2" * 9, "url": "https://alice:hunter2pw@db.example.com/x",
}
SECRET_PARTS = ["tok9Secret", "xsk-a1b2c3d4e5f6g7h8i9", "sk_live_0123456789abcdefABCDEFgh",
                "SK-ABCDEF0123456789XYZ", "dXNlcjpodW50ZXIy", "AKIAIOSFODNN7EXAMPLE",
                "ghp_" + "a1B2" * 9, "hunter2pw"]


def _ledger_bytes(db) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.rglob("*") if p.is_file())


def test_2_seeded_secrets_never_reach_the_ledger(gw):
    text = " | ".join(f"{k}: {v}" for k, v in SEEDED.items())
    resp = post(gw.url, dict(CHAT, messages=[{"role": "user", "content": text}]))
    key_as_model = post(gw.url, dict(CHAT, model="Zx81pQ7vK2mN9rT4wY6bH3jL5sD8fG0a"))
    huge_model = post(gw.url, dict(CHAT, model="m" * 3000))  # the fixture's limit is 4096 bytes
    rows = gw.rows([r.headers["x-kdroute-request-id"] for r in (resp, key_as_model, huge_model)])
    assert resp.status_code == 200 and "[REDACTED]" in rows[resp.headers[
        "x-kdroute-request-id"]]["prompt_text"]
    assert rows[key_as_model.headers["x-kdroute-request-id"]]["requested_model"] == "[REDACTED]"
    huge = rows[huge_model.headers["x-kdroute-request-id"]]
    assert len(huge["requested_model"]) < 300 and len(huge["error"]) < 300
    gw.app.state.gateway.writer.close()
    gw.app.state.gateway.writer.start()
    raw = _ledger_bytes(gw.db)
    for part in SECRET_PARTS + ["Zx81pQ7vK2mN9rT4wY6bH3jL5sD8fG0a"]:
        assert part.encode() not in raw, part
    assert b"hello from the fake model" in raw  # text is stored, secrets are not


def test_2_the_fallback_warning_is_redacted(gw, caplog):
    leak = f"upstream said key={KEYS[1]} and Bearer eyJabc.def.ghi and sk-live-deadbeef0001"
    gw.student.set(fail_next=10, fail_status=500, error_message=leak)
    with caplog.at_level(logging.WARNING, logger="kdroute"):
        assert post(gw.url, CHAT).status_code == 200  # the teacher answered
    warnings = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert warnings and all(s not in w for w in warnings
                            for s in (KEYS[1], "eyJabc.def.ghi", "sk-live-deadbeef0001"))


def test_2_the_access_log_is_redacted(fakes, tmp_path):
    from kdroute.gateway import create_app

    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db", access_log=True)
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    server = AppServer(app, log_level="info")  # uvicorn configures its loggers here
    logging.getLogger("uvicorn.access").addHandler(handler)
    try:
        with server:
            httpx.get(server.url + "/v1/models?api_key=sk-querystring-0123456789", headers=AUTH)
            httpx.get(server.url + "/v1/models?token=ghp_" + "a1B2" * 9, headers=AUTH)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert any("/v1/models" in line for line in lines)
    assert not any("sk-querystring-0123456789" in line or "a1B2a1B2" in line for line in lines)


# --- 3. /metrics and /ready need a key, unless opened to loopback scrapers --------------------

def test_3_probes_need_a_key(gw):
    for path in ("/metrics", "/ready", "/v1/models"):
        assert_openai_error(httpx.get(gw.url + path), 401, "missing_api_key")
        assert httpx.get(gw.url + path, headers=AUTH).status_code == 200
    assert httpx.get(gw.url + "/health").status_code == 200  # liveness says nothing


def test_3_loopback_scrapers_with_the_switch(fakes, tmp_path):
    from kdroute.gateway import create_app

    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db",
                             loopback_probes_without_key=True)
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    with AppServer(app) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200
        assert httpx.get(server.url + "/ready").status_code == 200
        assert post(server.url, CHAT, headers={}).status_code == 401  # traffic still needs one


# --- 8. bad input: 400 (never 500), OpenAI-shaped, with a request id and a row ----------------

BAD_BODIES = [
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "hi \xed\xa0\x80"}]}',
    b"[" * 10000,
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], "tools": '
    + b"[" * 900 + b"]" * 900 + b"}",
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], "seed": NaN}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], '
    b'"presence_penalty": Infinity}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], '
    b'"logit_bias": {"1": 1e400}}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": '
    b'[{"type": "text", "text": 123}]}]}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
    b'{"model": "kdroute/auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}',
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_8_bad_bodies_are_400_with_a_row(fakes, tmp_path, body):
    from kdroute.gateway import create_app

    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db", store_text=True,
                             max_body_bytes=100_000)
    app = create_app(settings, router=KeywordRouter(), env={})
    with AppServer(app) as server:
        resp = post(server.url, content=body, headers={"content-type": "application/json"})
        assert_openai_error(resp, 400)
        request_id = resp.headers["x-kdroute-request-id"]
        assert fakes[0].completion_calls() == fakes[1].completion_calls() == []
    from kdroute.store import Store

    with Store(tmp_path / "l.db") as store:  # the writer flushed at shutdown
        rows = list(store.db["requests"].rows_where("id = ?", [request_id]))
    assert len(rows) == 1 and rows[0]["status"] == 400


def test_8_content_type_trailing_slash_and_mid_body_disconnect(gw):
    assert_openai_error(post(gw.url, content=json.dumps(CHAT).encode(),
                             headers=dict(AUTH, **{"content-type": "text/plain"})), 415,
                        "unsupported_media_type")
    assert_openai_error(post(gw.url, CHAT, path="/v1/chat/completions/"), 404, "unknown_url")
    assert_openai_error(httpx.get(gw.url + "/v1/models/", headers=AUTH), 404, "unknown_url")
    before = gw.query("SELECT count(*) AS n FROM requests WHERE status = 499")[0]["n"]
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                     b"application/json\r\nauthorization: Bearer " + KEYS[0].encode() +
                     b"\r\ncontent-length: 1000\r\n\r\n{\"model\": \"kdroute/auto\"")
    rows = []
    for _ in range(200):
        rows = gw.query("SELECT * FROM requests WHERE status = 499")
        if len(rows) > before:
            break
        import time

        time.sleep(0.05)
    assert len(rows) == before + 1 and rows[-1]["error"] == "client disconnected"


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
])
def test_8_requests_uvicorn_refuses_are_openai_shaped(gw, raw):
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["error"]["code"] == "invalid_http_request"


# --- 9. a stream that breaks: status as the client saw it, and the stream outcome -------------

def test_9_broken_stream_records_status_and_outcome(gw):
    gw.student.set(stream_break_after=2)
    with httpx.stream("POST", gw.v1 + "/chat/completions", headers=AUTH, timeout=30,
                      json=dict(CHAT, model="kdroute/student", stream=True)) as resp:
        assert resp.status_code == 200
        list(resp.iter_lines())
        request_id = resp.headers["x-kdroute-request-id"]
    row = gw.row(request_id)
    assert (row["status"], row["stream_outcome"]) == (200, "upstream_error")
    gw.student.reset()
    ok = httpx.post(gw.v1 + "/chat/completions", headers=AUTH, timeout=30,
                    json=dict(CHAT, model="kdroute/student", stream=True))
    assert gw.row(ok.headers["x-kdroute-request-id"])["stream_outcome"] == "completed"


# --- 10. a 503 for an upstream 429 says when to come back ------------------------------------

@pytest.mark.parametrize("retry_after, expected", [("7", "7"), (None, "1")])
def test_10_retry_after_on_503(gw, retry_after, expected):
    gw.teacher.set(fail_next=10, fail_status=429, retry_after=retry_after)
    gw.app.state.gateway.targets["teacher"].policy = type(
        gw.app.state.gateway.targets["teacher"].policy)(0)  # no retries: answer at once
    try:
        resp = post(gw.url, dict(CHAT, model="kdroute/teacher"))
    finally:
        gw.app.state.gateway.targets["teacher"].policy = type(
            gw.app.state.gateway.targets["teacher"].policy)(
            fx.TEACHER["max_retries"], 0.01, 10.0)
    assert_openai_error(resp, 503, "upstream_unavailable")
    assert resp.headers["retry-after"] == expected


# --- 11. providers are warm before the first request ------------------------------------------

def test_11_litellm_is_imported_at_start_up_not_at_the_first_request(tmp_path):
    """In a fresh interpreter: once the server has started (lifespan done), litellm is already
    imported, before any request, so no request pays for it on the event loop."""
    import subprocess

    script = f"""
import sys, os
sys.path.insert(0, {str(fx.__file__.rsplit('/', 1)[0])!r})
os.environ["KDTEST_KEY"] = "sk-x-000000000000"
from fake_openai import AppServer, FakeOpenAI
from gateway_fixtures import KeywordRouter
from kdroute.config import Settings
from kdroute.gateway import create_app
with FakeOpenAI("t") as t:
    s = Settings.model_validate({{
        "teacher": {{"model": "deepseek/deepseek-chat", "api_base": t.url,
                    "api_key_env": "KDTEST_KEY", "input_price_per_1m": 1, "output_price_per_1m": 1}},
        "student": {{"model": "openai/s", "api_base": t.url, "input_price_per_1m": 1,
                    "output_price_per_1m": 1}},
        "store": {{"path": {str(tmp_path / 'l.db')!r}}}}})
    app = create_app(s, router=KeywordRouter(), env={{}})
    before = "litellm" in sys.modules
    with AppServer(app):
        print(before, "litellm" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
