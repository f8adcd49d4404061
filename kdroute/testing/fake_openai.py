"""A fake OpenAI-compatible back end that is a real HTTP server on 127.0.0.1, and a
runner that serves an ASGI app with uvicorn on a free port in a background thread.

The fake stands in for a remote provider (the only thing that cannot run here). Its behaviour is
set per test: latency, the next N requests failing with a status (and `retry-after`), token counts
reported in `usage`, a stream that breaks after K chunks. It records every request it received
and counts clients that hung up while it was still working.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops bursts of concurrent connections
    daemon_threads = True


@dataclass
class Behaviour:
    latency_s: float = 0.0
    text: str = "hello from the fake model"
    prompt_tokens: int = 100
    completion_tokens: int = 50
    fail_next: int = 0  # the next N requests fail with fail_status
    fail_status: int = 503
    retry_after: str | None = None
    stream_break_after: int | None = None  # chunks sent before the connection is cut
    chunk_delay_s: float = 0.0
    usage: bool = True  # report token usage (OpenAI does; some servers do not)
    error_message: str | None = None  # the message of a failure (default: "<name> failed...")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict
    ts: float = field(default_factory=time.monotonic)


class FakeOpenAI:
    """`with FakeOpenAI("student") as fake: fake.url` -> http://127.0.0.1:<port>/v1."""

    def __init__(self, name: str = "fake"):
        self.name = name
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def set(self, **changes) -> None:
        self.behaviour = replace(self.behaviour, **changes)

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self.received.clear()
            self.disconnects = 0

    def completion_calls(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("completions")]

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _take_failure(self) -> bool:
        with self._lock:
            if self.behaviour.fail_next > 0:
                self.behaviour = replace(self.behaviour, fail_next=self.behaviour.fail_next - 1)
                return True
            return False


def _handler_for(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Headers and body go out in separate writes: without NODELAY, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every response.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": fake.name, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with fake._lock:
                fake.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            b = fake.behaviour
            if not self._sleep(b.latency_s):
                return
            if fake._take_failure():
                extra = {"retry-after": b.retry_after} if b.retry_after is not None else {}
                message = b.error_message or f"{fake.name} failed on purpose"
                self._json(b.fail_status, {"error": {"message": message,
                                                     "type": "server_error"}}, extra)
                return
            chat = self.path.endswith("/chat/completions")
            if body.get("stream"):
                self._stream(body, chat, b)
            else:
                self._json(200, _completion(fake.name, body, chat, b))

        def _sleep(self, seconds: float) -> bool:
            """Wait, but notice a client that hangs up meanwhile (False)."""
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
                if readable:
                    try:
                        data = self.connection.recv(1, socket.MSG_PEEK)
                    except OSError:
                        data = b""
                    if not data:
                        with fake._lock:
                            fake.disconnects += 1
                        self.close_connection = True
                        return False
            return True

        def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict, chat: bool, b: Behaviour) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            pieces = _split(b.text)
            try:
                for i, piece in enumerate(pieces):
                    if b.stream_break_after is not None and i >= b.stream_break_after:
                        return  # cut the connection: no [DONE]
                    if not self._sleep(b.chunk_delay_s):
                        return
                    self._event(_chunk(fake.name, piece, chat, None))
                self._event(_chunk(fake.name, "", chat, "stop"))
                if b.usage and (body.get("stream_options") or {}).get("include_usage"):
                    self._event({"id": "cmpl-fake", "object": "chat.completion.chunk",
                                 "model": fake.name, "choices": [], "usage": _usage(b)})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                with fake._lock:
                    fake.disconnects += 1

        def _event(self, payload: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def _split(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _usage(b: Behaviour) -> dict:
    return {"prompt_tokens": b.prompt_tokens, "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens}


def _completion(name: str, body: dict, chat: bool, b: Behaviour) -> dict:
    choice = ({"index": 0, "finish_reason": "stop",
               "message": {"role": "assistant", "content": b.text}} if chat
              else {"index": 0, "finish_reason": "stop", "text": b.text})
    out = {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
           "created": int(time.time()), "model": body.get("model", name), "choices": [choice]}
    if b.usage:
        out["usage"] = _usage(b)
    return out


def _chunk(name: str, piece: str, chat: bool, finish: str | None) -> dict:
    if chat:
        choice = {"index": 0, "delta": {"content": piece} if piece else {},
                  "finish_reason": finish}
    else:
        choice = {"index": 0, "text": piece, "finish_reason": finish}
    return {"id": "cmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": name, "choices": [choice]}


class AppServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 on a free port, in a background thread."""

    def __init__(self, app, log_level: str = "warning", **options):
        import uvicorn

        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that name it.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        settings = getattr(getattr(app, "state", None), "settings", None)
        if settings is not None and not options:  # a gateway: served as `kdroute serve` does
            from kdroute.gateway.server import uvicorn_options

            options = uvicorn_options(settings)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                                    **options))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AppServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
