"""Where alerts go besides the ledger: the log, always, and an optional webhook.

The webhook gets one POST of JSON per opening or resolution (`{"event": "alert_opened", "alert":
{...the ledger row...}}`), sent from a background task with retries and exponential back-off; it
never blocks the poll loop or a request. Only the worker whose write opened or resolved the alert
sends it, so several workers do not notify twice. Failures are counted
(`kdroute_monitor_webhook{outcome="failed"}`) and logged without the URL's query string (it may
carry a token).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("kdroute.monitor")
MAX_PENDING = 100  # deliveries in flight before new ones are dropped (a dead hook must not pile up)


class AlertSink:
    def __init__(self, url: str, metrics, client: httpx.AsyncClient | None = None,
                 timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 0.5):
        self.url = url
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client
        self._own_client = False
        self._tasks: set[asyncio.Task] = set()
        parts = urlsplit(url) if url else None
        self._safe_url = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts else ""

    def emit(self, event: str, alert: dict[str, Any]) -> None:
        """Log the event and, with a webhook, schedule its delivery (call on the event loop)."""
        level = logging.WARNING if event == "alert_opened" else logging.INFO
        log.log(level, "%s: %s alert on %s: %s", event, alert.get("kind"), alert.get("slice"),
                alert.get("message") or "")
        if not self.url:
            return
        if len(self._tasks) >= MAX_PENDING:
            self.metrics.webhook.labels("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._deliver({"event": event,
                                                                     "alert": alert}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, payload: dict) -> None:
        if self._client is None:
            self._client, self._own_client = httpx.AsyncClient(), True
        for attempt in range(self.retries + 1):
            try:
                resp = await self._client.post(self.url, json=payload, timeout=self.timeout_s)
                if resp.status_code < 300:
                    self.metrics.webhook.labels("sent").inc()
                    return
                reason = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        self.metrics.webhook.labels("failed").inc()
        log.warning("alert webhook %s failed after %d attempts: %s", self._safe_url,
                    self.retries + 1, reason)

    async def aclose(self, wait_s: float = 2.0) -> None:
        """Give pending deliveries a moment, then cancel them."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=wait_s)
            for task in pending:
                task.cancel()
        if self._own_client and self._client is not None:
            await self._client.aclose()
