"""The quality breaker: while a quality alert is open for a slice, that slice's requests go to
the teacher (route_reason "breaker").

It never reads the ledger on the request path. The monitor's poll loop reads the open quality
alerts every `poll_interval_s` and hands the breaker a snapshot (`update`); every gateway worker
reads the same rows, so they all break alike within a poll. Only the router's own decisions are
overridden: a client that asked for `kdroute/student` by name gets the student.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kdroute.monitor.slices import ALL, slices_of

log = logging.getLogger("kdroute.monitor")


class Breaker:
    def __init__(self, enabled: bool, buckets: int, metrics, classify: Callable[[list], str | None]
                 | None = None):
        self.enabled = enabled
        self.buckets = buckets
        self.metrics = metrics
        self.classify = classify  # conversation -> "family:..." | None, set once trained
        self.open_slices: frozenset[str] = frozenset()

    def update(self, open_quality_slices: set[str]) -> None:
        """Take the poll loop's snapshot; log and count every switch."""
        new = frozenset(open_quality_slices)
        old, self.open_slices = self.open_slices, new
        for name in sorted(new - old):
            self.metrics.breaker_open.labels(name).set(1)
            self.metrics.breaker_switches.labels(name, "open").inc()
            if self.enabled:
                log.warning("quality breaker OPEN for %s: its requests go to the teacher", name)
        for name in sorted(old - new):
            self.metrics.breaker_open.labels(name).set(0)
            self.metrics.breaker_switches.labels(name, "closed").inc()
            if self.enabled:
                log.warning("quality breaker closed for %s: the router decides again", name)

    async def guard(self, decision, conversation: list[dict], record):
        """The decision to act on, and the request's slice on `record`. Called once per request
        from Gateway.decide; cheap: a set lookup, plus the family classifier (in a thread) when
        the ledger taught it families."""
        family = None
        if self.classify is not None and conversation:
            family = await asyncio.to_thread(self.classify, conversation)
        record.slice = family or ALL
        if not (self.enabled and self.open_slices and decision.role == "student"
                and decision.reason == "router"):
            return decision
        hit = next((s for s in slices_of(family, decision.score, self.buckets)
                    if s in self.open_slices), None)
        if hit is None:
            return decision
        self.metrics.breaker_routed.labels(hit).inc()
        return type(decision)("teacher", "breaker", decision.score, decision.threshold)
