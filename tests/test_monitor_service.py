"""The monitor's poll loop on a real ledger, without HTTP: input drift read from the requests
table, and catch-up of the detector from rows other workers wrote."""

import asyncio
import random
from types import SimpleNamespace

from kdroute.config import Settings
from kdroute.gateway.costing import Prices
from kdroute.monitor.service import Monitor
from kdroute.store import Store

TARGET = SimpleNamespace(backend=None, prices=Prices(1.0, 1.0), timeout_s=1.0)


def monitor_for(db, **monitor) -> Monitor:
    settings = Settings.model_validate({"store": {"path": str(db)},
                                        "monitor": {"shadow_rate": 0.0, **monitor}})
    router = SimpleNamespace(version="v1", artifact=None)
    return Monitor(settings, {"teacher": TARGET, "student": TARGET}, router=router)


def poll(monitor: Monitor, times: int = 1) -> None:
    async def go():
        for _ in range(times):
            await monitor.poll_once()
        await monitor.sink.aclose()

    asyncio.run(go())
    monitor.ledger.close()


def requests(rng, n, lo, hi, start):
    return [{"id": f"r{start + i}", "ts": f"2026-01-01T00:{(start + i) // 60:02d}:"
             f"{(start + i) % 60:02d}.000", "router_score": lo + rng.random() * (hi - lo),
             "threshold": 0.5, "route_reason": "router", "router_version": "v1"}
            for i in range(n)]


def test_router_score_shift_opens_an_input_drift_alert(tmp_path):
    rng = random.Random(0)
    db = tmp_path / "l.db"
    with Store(db) as store:
        store.insert_requests(requests(rng, 100, 0.0, 0.6, 0) + requests(rng, 100, 0.4, 1.0, 100))
    poll(monitor_for(db, drift_window=100))
    with Store(db) as store:
        (alert,) = store.open_alerts()
    assert (alert["kind"], alert["slice"], alert["statistic"]) == \
        ("input_drift", "all", "router_score_psi")
    assert alert["value"] > 0.25 and alert["n"] == 100


def test_no_drift_alert_before_reference_and_recent_windows_are_apart(tmp_path):
    rng = random.Random(1)
    db = tmp_path / "l.db"
    with Store(db) as store:
        store.insert_requests(requests(rng, 150, 0.0, 1.0, 0))  # 150 < 2 x 100
    poll(monitor_for(db, drift_window=100))
    with Store(db) as store:
        assert store.open_alerts() == []


def test_a_new_worker_catches_up_on_evaluations_and_resolves_a_stale_alert(tmp_path):
    db = tmp_path / "l.db"
    with Store(db) as store:
        for i in range(60):
            store.insert_shadow({"request_id": f"r{i}", "kind": "shadow", "status": "ok",
                                 "verdict": 1, "inclusion_prob": 0.5, "slice": "all"})
        store.open_alert_once({"kind": "quality", "slice": "all", "value": 0.5, "bound": 0.7,
                               "n": 60, "window": 200, "threshold": 0.8})
    monitor = monitor_for(db, window=60, min_samples=30)
    poll(monitor)
    with Store(db) as store:
        (alert,) = store.alerts()
    assert alert["resolved_at"] is not None and alert["resolved_value"] == 1.0
    assert alert["resolved_bound"] > 0.8
    assert monitor.breaker.open_slices == frozenset()


def test_catch_up_reads_only_the_served_students_evaluations(tmp_path):
    # an earlier release (hf:old) disagreed with the teacher on everything, before and after the
    # new one (hf:new) agreed: a worker serving hf:new judges it on its own answers only
    db = tmp_path / "l.db"
    with Store(db) as store:
        for i, (model, verdict) in enumerate([("hf:old", 0)] * 60 + [("hf:new", 1)] * 60
                                             + [("hf:old", 0)] * 60):
            store.insert_shadow({"request_id": f"r{i}", "kind": "shadow", "status": "ok",
                                 "verdict": verdict, "inclusion_prob": 1.0, "slice": "all",
                                 "student_model": model})

    def serving(name: str) -> Monitor:
        settings = Settings.model_validate({"store": {"path": str(db)}, "monitor": {
            "shadow_rate": 0.0, "window": 60, "min_samples": 30}})
        student = SimpleNamespace(backend=SimpleNamespace(name=name), prices=Prices(1.0, 1.0),
                                  timeout_s=1.0)
        return Monitor(settings, {"teacher": TARGET, "student": student},
                       router=SimpleNamespace(version="v1", artifact=None))

    new = serving("hf:new")
    poll(new, times=2)  # the second poll reads only rows written after the catch-up
    assert new.detector.seen == 60 and new.detector.rates()["all"].value == 1.0
    with Store(db) as store:
        assert store.open_alerts() == []
    old = serving("hf:old")
    poll(old)
    with Store(db) as store:
        assert ("quality", "all") in {(a["kind"], a["slice"]) for a in store.open_alerts()}
