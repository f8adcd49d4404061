"""The gateway's one outbound HTTP client: a pooled aiohttp session for the completion calls (the
hot path), inside an httpx client for everything else.

Why aiohttp on the hot path: under load, httpx/httpcore took most of the gateway's CPU in a
py-spy profile (issue 14), a quarter of it in httpcore's connection-pool scan
(`_assign_requests_to_connections`, which walks every pooled connection for every request:
quadratic at high concurrency). aiohttp's connector keeps idle connections per host in a list
it pops from, and its HTTP parser is C.

Why it is still an `httpx.AsyncClient`: the rare calls (the monitor's alert webhook) use httpx's
API, and one object keeps one owner for every outbound connection: `aclose()` closes both pools.

The session is made on first use, on the serving event loop (aiohttp binds a session to the
loop it was created on, and `create_app` runs before any loop exists). It keeps no cookies (an
upstream's cookie must never travel with another client's request) and reads no proxy from the
environment: back ends are named by `api_base`, on the operator's network.
"""

from __future__ import annotations

import aiohttp
import httpx

MAX_CONNECTIONS = 512
KEEPALIVE_S = 60.0  # below common servers' idle limits (uvicorn 75 s as kdroute serves it)


class UpstreamClient(httpx.AsyncClient):
    def __init__(self, max_connections: int = MAX_CONNECTIONS, **httpx_options):
        super().__init__(limits=httpx.Limits(max_connections=max_connections,
                                             max_keepalive_connections=128), **httpx_options)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled aiohttp session (call on the event loop that serves)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                             keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300)
            # No total timeout here: each call sets its own (the model's timeout_s).
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None), raise_for_status=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        await super().aclose()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
