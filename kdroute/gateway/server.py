"""uvicorn's HTTP protocol with TCP_NODELAY on every connection.

asyncio only sets TCP_NODELAY on sockets created with proto=IPPROTO_TCP; uvicorn's own socket for
`--workers N` is created without it, and its responses go out as two writes (headers, then body),
so Nagle's algorithm meets the client's delayed ACK and every keep-alive response waits ~40 ms.
"""

from __future__ import annotations

import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not a TCP socket after all: nothing to tune
        super().connection_made(transport)
