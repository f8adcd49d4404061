"""Prometheus metrics of one gateway app, on its own registry (no process globals, so several
apps, e.g. in tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kdroute.gateway.records import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: local tiny models answer in milliseconds, hosted teachers in tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self, writer=None):
        self.registry = CollectorRegistry(auto_describe=True)
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
        depth = Gauge("kdroute_writer_queue_depth", "Request rows waiting for the ledger writer",
                      registry=r)
        dropped = Gauge("kdroute_writer_dropped_rows", "Request rows dropped because the writer "
                        "queue was full (since start)", registry=r)
        failed = Gauge("kdroute_writer_failed_rows", "Request rows the writer could not write "
                       "(since start)", registry=r)
        if writer is not None:
            depth.set_function(lambda: writer.depth)
            dropped.set_function(lambda: writer.dropped)
            failed.set_function(lambda: writer.failed)

    def observe(self, record: RequestRecord) -> None:
        role = record.served_role or "none"
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
        return generate_latest(self.registry)
