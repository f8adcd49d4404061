"""The monitor's Prometheus metrics, registered on the gateway app's own registry (so /metrics
shows them beside the request metrics, and two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        self.sampled = Counter("kdroute_monitor_sampled", "Requests sampled for a background "
                               "evaluation, by kind (shadow | probe)", ["kind"], registry=r)
        self.dropped = Counter("kdroute_monitor_dropped", "Sampled evaluations dropped, by kind "
                               "and reason (queue_full | budget | shutdown)", ["kind", "reason"],
                               registry=r)
        self.failed = Counter("kdroute_monitor_failed", "Background evaluations that failed, by "
                              "kind and stage (upstream | scoring | ledger | judge)",
                              ["kind", "stage"], registry=r)
        self.evaluated = Counter("kdroute_monitor_evaluated", "Scored pairs by kind, method and "
                                 "verdict", ["kind", "method", "verdict"], registry=r)
        self.cost = Counter("kdroute_monitor_cost_usd", "What background evaluations cost, USD, by "
                            "kind (shadow teacher, probe student, judge)", ["kind"], registry=r)
        self.queue_depth = Gauge("kdroute_monitor_queue_depth", "Evaluations waiting in this "
                                 "worker's queue", registry=r)
        self.in_flight = Gauge("kdroute_monitor_in_flight", "Background calls in flight",
                               registry=r)
        self.spent_today = Gauge("kdroute_monitor_spent_today_usd", "Monitor spend since 00:00 UTC,"
                                 " all workers (from the ledger)", registry=r)
        self.agreement = Gauge("kdroute_monitor_agreement", "Weighted agreement of the rolling "
                               "window, with its Wilson bounds", ["slice", "bound"], registry=r)
        self.breaker_open = Gauge("kdroute_monitor_breaker_open", "1 while the quality breaker is "
                                  "open for this slice", ["slice"], registry=r)
        self.breaker_switches = Counter("kdroute_monitor_breaker_switches", "Breaker state "
                                        "changes seen by this worker, by slice and new state",
                                        ["slice", "state"], registry=r)
        self.breaker_routed = Counter("kdroute_monitor_breaker_routed", "Requests the breaker sent "
                                      "to the teacher instead of the student", ["slice"],
                                      registry=r)
        self.alerts = Counter("kdroute_monitor_alerts", "Alerts this worker opened or resolved, by "
                              "kind and action", ["kind", "action"], registry=r)
        self.open_alerts = Gauge("kdroute_monitor_open_alerts", "Open alerts in the ledger, by "
                                 "kind", ["kind"], registry=r)
        self.webhook = Counter("kdroute_monitor_webhook", "Alert webhook deliveries by outcome "
                               "(sent | failed | dropped)", ["outcome"], registry=r)
        self.poll_errors = Counter("kdroute_monitor_poll_errors", "Ledger polls that failed "
                                   "(the last breaker state is kept)", registry=r)
