"""Prometheus metrics of one gateway app, on its own registry (no process globals, so several
apps, e.g. in tests, never share counters).

With several workers (`kdroute serve --workers N`) each process counts its own requests, so a
scrape answered by one worker would see only its share. There, prometheus_client's multiprocess
mode is on (`PROMETHEUS_MULTIPROC_DIR`, set by `kdroute serve` before the workers start): every
worker writes its values to memory-mapped files in that folder and any worker's `/metrics` sums
them all. Chosen over aggregating from the ledger because it is exact at once (the ledger lags
by a flush interval and lacks retries, shadow and breaker counters), costs a scrape O(series)
instead of a scan of a growing table, and is prometheus_client's documented way. Gauges there are
`livesum` (summed over live workers) and set when they change, not computed at scrape time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kdroute.gateway.records import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: local tiny models answer in milliseconds, hosted teachers in tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class GatewayMetrics:
    def __init__(self, writer=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir()
        if self.multiprocess:
            _forget_dead_workers(self.multiprocess)
        self.writer = writer
        r = self.registry
        self.requests = Counter("kdroute_requests", "Requests by served model, role and status",
                                ["served_model", "role", "status"], registry=r)
        self.latency = Histogram("kdroute_request_latency_seconds", "Whole-request latency",
                                 ["role"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kdroute_time_to_first_token_seconds",
                              "Time to the first streamed token", ["role"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.routed = Counter("kdroute_routed", "Routing decisions by role and reason "
                              "(the routing share)", ["role", "reason"], registry=r)
        self.cost = Counter("kdroute_cost_usd", "Actual cost of served requests, USD", ["role"],
                            registry=r)
        self.teacher_cost = Counter("kdroute_teacher_equivalent_cost_usd",
                                    "What the same requests would have cost on the teacher, USD",
                                    registry=r)
        self.savings = Counter("kdroute_savings_usd", "Teacher-equivalent minus actual cost, USD "
                               "(positive part; fallbacks cost more than they save)", registry=r)
        self.retries = Counter("kdroute_backend_retries", "Back-end retries on 429/5xx", ["role"],
                               registry=r)
        self.fallbacks = Counter("kdroute_fallbacks", "Student failures answered by the teacher",
                                 registry=r)
        self.tokens = Counter("kdroute_tokens", "Tokens by role and kind", ["role", "kind"],
                              registry=r)
        self.stream_outcomes = Counter("kdroute_stream_outcomes", "How streams ended after their "
                                       "200: completed, upstream_error, client_disconnected",
                                       ["outcome"], registry=r)
        mode = {"multiprocess_mode": "livesum"}
        self.depth = Gauge("kdroute_writer_queue_depth", "Request rows waiting for the ledger "
                           "writer", registry=r, **mode)
        self.dropped = Gauge("kdroute_writer_dropped_rows", "Request rows dropped because the "
                             "writer queue was full (since start; kept in the spool and "
                             "replayed at the next start)", registry=r, **mode)
        self.failed = Gauge("kdroute_writer_failed_rows", "Request rows the writer could not "
                            "write (since start)", registry=r, **mode)
        self.replayed = Gauge("kdroute_writer_replayed_rows", "Request rows recovered at start "
                              "from the spool of a process that died", registry=r, **mode)
        self.ledger_blocked = Gauge("kdroute_ledger_blocked_seconds", "How long the ledger has "
                                    "been locked by another connection (0 when writable)",
                                    registry=r, **mode)
        if writer is not None and not self.multiprocess:
            self.depth.set_function(lambda: writer.depth)
            self.dropped.set_function(lambda: writer.dropped)
            self.failed.set_function(lambda: writer.failed)
            self.replayed.set_function(lambda: writer.replayed)
            self.ledger_blocked.set_function(lambda: writer.blocked_for)

    def refresh_writer(self) -> None:
        """Multiprocess mode: copy this worker's writer counters into its gauge files."""
        w = self.writer
        if w is None or not self.multiprocess:
            return
        self.depth.set(w.depth)
        self.dropped.set(w.dropped)
        self.failed.set(w.failed)
        self.replayed.set(w.replayed)
        self.ledger_blocked.set(w.blocked_for)

    def observe(self, record: RequestRecord) -> None:
        role = record.served_role or "none"
        if record.stream_outcome is not None:
            self.stream_outcomes.labels(record.stream_outcome).inc()
        self.refresh_writer()
        self.requests.labels(record.served_model or "none", role, str(record.status)).inc()
        if record.latency_ms is not None:
            self.latency.labels(role).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(role).observe(record.ttft_ms / 1000)
        if record.served_role is None:
            return
        self.routed.labels(role, record.route_reason).inc()
        self.cost.labels(role).inc(record.cost_usd)
        self.teacher_cost.inc(record.teacher_cost_usd)
        self.savings.inc(max(record.teacher_cost_usd - record.cost_usd, 0.0))
        if record.fallback:
            self.fallbacks.inc()
        self.tokens.labels(role, "prompt").inc(record.prompt_tokens or 0)
        self.tokens.labels(role, "completion").inc(record.completion_tokens or 0)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.refresh_writer()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess)
        return generate_latest(registry)


def _forget_dead_workers(path: str) -> None:
    """Drop the live-gauge files of workers that are gone (uvicorn restarts a dead worker under
    a new pid; its old gauges must not be summed in)."""
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for f in Path(path).glob("gauge_live*_*.db")
            if (m := re.search(r"_(\d+)\.db$", f.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, someone else's
