"""How uvicorn serves the gateway: one set of options for `kdroute serve` and the tests.

- TCP_NODELAY on every connection. asyncio only sets it on sockets created with
  proto=IPPROTO_TCP; uvicorn's own socket for `--workers N` is created without it, and its
  responses go out as two writes (headers, then body), so Nagle's algorithm meets the client's
  delayed ACK and every keep-alive response waits ~40 ms.
- Requests uvicorn itself refuses (a malformed request line or header) get an OpenAI-shaped JSON
  400 instead of uvicorn's plain text.
- A keep-alive timeout above clients' own pool expiry: with both at 5 s (httpx's and uvicorn's
  defaults) a client can send a request on a connection at the moment the server closes it,
  and sees a connection reset for a request the gateway never received (hence no ledger row).
- uvloop and httptools where installed; no access log unless `gateway.access_log` (the ledger
  has a row per request; when on, its lines are redacted like every other log record).
- A future per request, `scope[CLIENT_GONE]`, that the protocol resolves when the connection is
  lost before the response is complete: the gateway cancels the back-end call from its
  done-callback, with no task per request waiting on `receive()` (issue 14). Only with httptools
  (uvicorn's h11 protocol has no per-request hook); without it the gateway falls back to a
  watcher task (`app.client_gone`).
"""

from __future__ import annotations

import json
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol

CLIENT_GONE = "kdroute.client_gone"  # ASGI scope key of the per-request disconnect future
_BAD_REQUEST = json.dumps({"error": {"message": "Invalid HTTP request received.",
                                     "type": "invalid_request_error", "param": None,
                                     "code": "invalid_http_request"}}).encode()


class GatewayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not a TCP socket after all: nothing to tune
        super().connection_made(transport)

    def on_message_begin(self) -> None:  # httptools: a new request's scope (before its task)
        super().on_message_begin()
        self.scope[CLIENT_GONE] = self.loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            gone = cycle.scope.get(CLIENT_GONE)
            if gone is not None and not gone.done():
                gone.set_result(None)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn could not parse the request: answer as the gateway answers every error."""
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(_BAD_REQUEST)).encode() +
                             b"\r\nconnection: close\r\n\r\n" + _BAD_REQUEST)
        self.transport.close()


NoDelayHTTPProtocol = GatewayHTTPProtocol  # the name this class had before


def uvicorn_options(settings) -> dict:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` (besides app, host, port)."""
    gw = settings.gateway
    options = {"http": GatewayHTTPProtocol, "timeout_keep_alive": gw.keep_alive_s,
               "access_log": gw.access_log}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        options["loop"] = "asyncio"
    return options
