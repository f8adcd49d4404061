"""Issue 14's fast paths keep their behaviour: the aiohttp upstream client (error mapping,
timeouts, streaming, no cookies), cancellation on disconnect without a watcher task (the HTTP
protocol's per-request future, and the watcher fallback under uvicorn's h11), and the access-log
switch. Real HTTP servers on 127.0.0.1 throughout; no timing assertions."""

import asyncio
import logging
import socket
import threading
import time

import gateway_fixtures as fx
import httpx
import pytest
from fake_openai import AppServer
from gateway_fixtures import EASY, KEYS, KeywordRouter, make_settings

from kdroute.gateway.backends import HTTPBackend, RetryPolicy, with_retries
from kdroute.gateway.errors import UpstreamError
from kdroute.gateway.server import CLIENT_GONE, uvicorn_options
from kdroute.gateway.service import ClientGone, until_disconnect
from kdroute.gateway.upstream import UpstreamClient

fakes, _reset_fakes = fx.fakes, fx._reset_fakes  # this module's fixtures
AUTH = {"authorization": f"Bearer {KEYS[0]}"}
CHAT = {"messages": EASY, "max_tokens": 8}


def run_backend(url: str, action, timeout_s: float = 5.0):
    """Run `action(backend)` on a fresh loop with a fresh client, as the gateway would."""
    async def main():
        async with UpstreamClient() as client:
            return await action(HTTPBackend("upstream-model", "m", url, "sk-upstream-0000",
                                            timeout_s, client))
    return asyncio.run(main())


async def collect(backend, endpoint="chat"):
    return [chunk async for chunk in backend.stream(endpoint, dict(CHAT))]


# --- the aiohttp upstream client ---------------------------------------------------------------

def test_a_completion_carries_the_key_and_the_upstream_model(fakes):
    student = fakes[1]
    answer = run_backend(student.url, lambda b: b.complete("chat", dict(CHAT, model="x")))
    assert answer["choices"][0]["message"]["content"] == student.behaviour.text
    call = student.completion_calls()[-1]
    assert call.headers["authorization"] == "Bearer sk-upstream-0000"
    assert call.body["model"] == "m" and call.body["stream"] is False
    assert call.headers["content-type"] == "application/json"


def test_status_errors_keep_status_message_and_retry_after(fakes):
    student = fakes[1]
    student.set(fail_next=1, fail_status=429, retry_after="3", error_message="slow down")
    with pytest.raises(UpstreamError) as err:
        run_backend(student.url, lambda b: b.complete("chat", dict(CHAT)))
    assert err.value.status == 429 and err.value.retry_after == 3.0
    assert "slow down" in err.value.message and err.value.retryable
    student.set(fail_next=1, fail_status=400, error_message="bad field")
    with pytest.raises(UpstreamError) as err:
        run_backend(student.url, lambda b: b.complete("completions", {"prompt": "x"}))
    assert err.value.status == 400 and not err.value.retryable


def test_a_refused_connection_is_retryable_and_retried(fakes):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamError) as err:
        run_backend(f"http://127.0.0.1:{port}/v1", lambda b: b.complete("chat", dict(CHAT)))
    assert err.value.status is None and "unreachable" in err.value.message
    assert err.value.retryable
    # with_retries over the aiohttp client: two 503s, then the answer
    student = fakes[1]
    student.set(fail_next=2, fail_status=503)
    answer = run_backend(student.url, lambda b: with_retries(
        lambda: b.complete("chat", dict(CHAT)), RetryPolicy(2, 0.01)))
    assert answer["choices"] and len(student.completion_calls()) == 3


def test_a_slow_back_end_times_out_and_is_hung_up_on(fakes):
    student = fakes[1]
    student.set(latency_s=30)
    with pytest.raises(UpstreamError) as err:
        run_backend(student.url, lambda b: b.complete("chat", dict(CHAT)), timeout_s=1.0)
    assert len(student.completion_calls()) == 1  # it was sent, then given up on
    assert err.value.timeout and not err.value.retryable
    deadline = time.monotonic() + 10
    while student.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert student.disconnects == 1  # the connection was closed, not left to the pool


def test_streaming_relays_every_chunk_then_ends_at_done(fakes):
    student = fakes[1]
    student.set(text="one two three")
    chunks = run_backend(student.url, collect)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    assert student.completion_calls()[-1].body["stream"] is True


def test_a_stream_may_last_longer_than_the_timeout_between_chunks(fakes):
    student = fakes[1]
    student.set(text="a b c d e f g h", chunk_delay_s=0.5)  # ~4 s in all, 0.5 s per chunk
    chunks = run_backend(student.url, collect, timeout_s=2.0)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                   if c["choices"]) == "a b c d e f g h"


def test_a_broken_or_failing_stream_is_an_upstream_error(fakes):
    student = fakes[1]
    student.set(text="a b c d", stream_break_after=2)
    with pytest.raises(UpstreamError) as err:
        run_backend(student.url, collect)
    assert err.value.status == 502 and "without [DONE]" in err.value.message
    student.set(stream_break_after=None, fail_next=1, fail_status=500)
    with pytest.raises(UpstreamError) as err:
        run_backend(student.url, collect)
    assert err.value.status == 500


class RawServer:
    """Answers every request with the same raw bytes (what the fake cannot send)."""

    def __init__(self, response: bytes):
        self.response = response
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)  # so that close() ends this loop
        while self.sock.fileno() != -1:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length")), b"0"))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head)
                conn.sendall(self.response)


def test_a_body_that_is_not_json_is_a_502_and_no_cookie_is_kept():
    body = b"<html>oops</html>"
    server = RawServer(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nset-cookie: s=secret\r\n"
                       b"content-length: " + str(len(body)).encode() +
                       b"\r\nconnection: close\r\n\r\n" + body)

    async def twice(backend):
        for _ in range(2):
            with pytest.raises(UpstreamError) as err:
                await backend.complete("chat", dict(CHAT))
            assert err.value.status == 502 and "not JSON" in err.value.message

    run_backend(server.url, twice)
    server.sock.close()
    assert len(server.requests) == 2
    assert not any(b"cookie" in head.lower() for head in server.requests)


# --- disconnect: the protocol's future instead of a watcher task -------------------------------

def test_until_disconnect_cancels_the_call_when_the_client_leaves():
    async def main():
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        cancelled = asyncio.Event()

        async def call():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        loop.call_later(0.05, gone.set_result, None)
        with pytest.raises(ClientGone):
            await until_disconnect(gone, call())
        assert cancelled.is_set()
        assert asyncio.current_task().cancelling() == 0  # our own cancel was taken back

        # gone before the call: it never starts
        with pytest.raises(ClientGone):
            await until_disconnect(gone, call())

        # the client leaves just after the answer: the finished request is not cancelled
        late = loop.create_future()

        async def quick():
            late.set_result(None)  # its done-callback runs on the next loop turn
            return "answer"

        assert await until_disconnect(late, quick()) == "answer"
        await asyncio.sleep(0.01)  # this task survives the turn in which the callback runs
        return "survived"

    assert asyncio.run(main()) == "survived"


def test_the_gateway_protocol_gives_each_request_a_disconnect_future(fakes, tmp_path):
    from fastapi import Request

    from kdroute.gateway import create_app

    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db")
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    seen = []

    @app.get("/probe")
    async def probe(request: Request):
        seen.append(request.scope.get(CLIENT_GONE))
        return {}

    with AppServer(app) as server:
        for _ in range(2):
            assert httpx.get(server.url + "/probe", headers=AUTH, timeout=30).status_code == 200
    assert len(seen) == 2 and all(isinstance(f, asyncio.Future) for f in seen)
    assert seen[0] is not seen[1] and not any(f.done() for f in seen)  # answered, not gone


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_disconnect_cancels_the_back_end_call_on_either_protocol(fakes, tmp_path, http):
    from kdroute.gateway import create_app

    teacher = fakes[0]
    settings = make_settings(teacher.url, fakes[1].url, tmp_path / "l.db")
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    options = uvicorn_options(settings)
    if http == "h11":  # uvicorn's pure-Python protocol: the watcher-task fallback
        options["http"] = "h11"
    teacher.set(latency_s=30)
    with AppServer(app, **options) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                       json=dict(CHAT, model="kdroute/teacher"),
                       timeout=httpx.Timeout(30, read=0.3))
        deadline = time.monotonic() + 10
        while teacher.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert teacher.disconnects == 1
        gw = fx.Gateway(server.url, tmp_path / "l.db", app, *fakes)
        while time.monotonic() < deadline:
            rows = gw.query("SELECT status, error FROM requests")
            if rows:
                break
            time.sleep(0.05)
        assert rows == [{"status": 499, "error": "client disconnected"}]
        teacher.set(latency_s=0)
        # the server still serves afterwards
        assert httpx.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json=dict(CHAT, model="kdroute/teacher")).status_code == 200


# --- the access log: off by default, on when asked ----------------------------------------------

@pytest.mark.parametrize("access_log", [False, True])
def test_the_access_log_follows_the_switch(fakes, tmp_path, access_log):
    """uvicorn logs access lines when its `uvicorn.access` logger has a handler: the switch
    leaves it none when off (so nothing is formatted), and keeps uvicorn's when on."""
    from kdroute.gateway import create_app

    extra = {"access_log": True} if access_log else {}
    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db", **extra)
    assert uvicorn_options(settings)["access_log"] is access_log
    app = create_app(settings, router=KeywordRouter(), env={"KDROUTE_API_KEYS": KEYS[0]})
    access = logging.getLogger("uvicorn.access")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    server = AppServer(app, log_level="info")  # uvicorn configures its loggers here
    assert access.hasHandlers() is access_log
    if access_log:
        access.addHandler(handler)
    try:
        with server:
            for _ in range(3):
                assert httpx.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                                  json=dict(CHAT, model="kdroute/auto")).status_code == 200
    finally:
        access.removeHandler(handler)
    lines = [r.getMessage() for r in records if "/v1/chat/completions" in r.getMessage()]
    assert len(lines) == (3 if access_log else 0)
