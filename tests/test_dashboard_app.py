"""The Streamlit page, run by `streamlit.testing.v1.AppTest` on seeded ledgers: every section
renders, the overview equals the seeded rows, each filter moves the numbers, and the empty,
foreign and missing files render their messages."""

import re
import sqlite3
import sys

import pandas as pd
import pytest
from conftest import REPO

from kdroute.monitor.stats import weighted_rate
from kdroute.store import Store
from kdroute.store.synthetic import STUDENT, Synthetic, write_synthetic

APP = REPO / "dashboards" / "app.py"
TABS = ["Cost", "Quality & drift", "Routing", "Latency & errors", "Release benchmarks",
        "Training", "Disagreements"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("app") / "ledger.db"
    write_synthetic(path, Synthetic(requests=3000, days=2, seed=11))
    with sqlite3.connect(path) as conn:
        rows = pd.read_sql_query("SELECT * FROM requests", conn)
        shadows = pd.read_sql_query("SELECT * FROM shadow_evals", conn)
        alerts = pd.read_sql_query("SELECT * FROM alerts", conn)
    return path, rows, shadows, alerts


def page(monkeypatch, path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", str(path)])
    at = AppTest.from_file(str(APP), default_timeout=120)
    return at.run()


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def number(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


def expected(rows: pd.DataFrame, shadows: pd.DataFrame) -> dict[str, float]:
    """The overview computed straight from the seeded rows."""
    student, teacher = (rows.served_role == "student").sum(), (rows.served_role == "teacher").sum()
    kept = shadows[shadows.request_id.isin(rows.id)]
    gross = rows.teacher_cost_usd.sum() - rows.cost_usd.sum()
    monitor = kept.teacher_cost_usd.fillna(0).sum() + kept.student_cost_usd.fillna(0).sum()
    decided = kept[kept.agreement.notna() & (kept.status == "ok")].sort_values(
        "ts", ascending=False).head(200)
    rate = weighted_rate(decided.agreement.tolist(), decided.inclusion_prob.tolist(), 0.95)
    return {"Requests": len(rows), "Served by the student": 100 * student / (student + teacher),
            "Gross savings": gross, "Net savings": gross - monitor,
            "Agreement now": 100 * rate.value}


def assert_overview(at, rows, shadows):
    shown = metrics(at)
    for label, value in expected(rows, shadows).items():
        tolerance = 0.05 if label in ("Served by the student", "Agreement now") else \
            max(0.005, abs(value) * 5e-4)
        assert number(shown[label]) == pytest.approx(value, abs=tolerance), label


def test_every_section_renders_and_the_overview_equals_the_rows(monkeypatch, seeded):
    path, rows, shadows, alerts = seeded
    at = page(monkeypatch, path)
    assert not at.exception and not at.error
    assert [t.label for t in at.tabs] == TABS
    assert len(at.get("vega_lite_chart")) >= 15  # every chart of every tab was built
    assert len(at.get("download_button")) == 1
    assert_overview(at, rows, shadows)
    shown = metrics(at)
    assert shown["Open alerts"] == str(alerts.resolved_at.isna().sum())
    assert shown["Breaker"] == "open"
    assert shown["Router in use"] == rows.sort_values("ts").router_version.dropna().iloc[-1]
    gross_caption = next(c.value for c in at.caption if "of always-teacher" in c.value)
    assert "95 % interval" in gross_caption


@pytest.mark.parametrize("key, value, column", [
    ("slice", "family:arith", "slice"),
    ("served_model", STUDENT, "served_model"),
    ("router_version", "tfidf-v1", "router_version"),
])
def test_each_filter_changes_the_numbers_as_expected(monkeypatch, seeded, key, value, column):
    path, rows, shadows, _ = seeded
    at = page(monkeypatch, path)
    before = metrics(at)
    at.multiselect(key=key).set_value([value]).run()
    assert not at.exception
    assert metrics(at)["Requests"] != before["Requests"]
    assert_overview(at, rows[rows[column] == value], shadows[shadows[column] == value]
                    if column in ("slice", "router_version") else shadows)


def test_time_filter_narrows_to_the_chosen_hours(monkeypatch, seeded):
    path, rows, shadows, _ = seeded
    at = page(monkeypatch, path)
    at.select_slider(key="time").set_range("2026-01-05T06", "2026-01-05T17").run()
    assert not at.exception
    inside = rows[(rows.ts >= "2026-01-05T06") & (rows.ts < "2026-01-05T18")]
    assert_overview(at, inside, shadows[(shadows.ts >= "2026-01-05T06")
                                        & (shadows.ts < "2026-01-05T18")])


def test_slice_filter_shows_only_its_alerts_and_breaker(monkeypatch, seeded):
    path, *_ = seeded
    at = page(monkeypatch, path)
    at.multiselect(key="slice").set_value(["family:arith"]).run()
    assert metrics(at)["Open alerts"] == "0" and metrics(at)["Breaker"] == "closed"
    at.multiselect(key="slice").set_value(["family:count"]).run()
    assert metrics(at)["Open alerts"] == "2" and metrics(at)["Breaker"] == "open"


def test_empty_ledger_says_no_data_yet(monkeypatch, tmp_path):
    Store(tmp_path / "new.db").close()
    at = page(monkeypatch, tmp_path / "new.db")
    assert not at.exception and not at.error
    infos = " ".join(i.value for i in at.info)
    assert "No data yet" in infos and "No bench run yet" in infos
    assert metrics(at)["Requests"] == "0"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("hello\n" * 200), "not a kdroute ledger"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE x (a)").connection.commit(),
     "without kdroute's tables"),
    (lambda p: None, "no ledger there"),
])
def test_foreign_or_missing_file_renders_one_message(monkeypatch, tmp_path, make, message):
    path = tmp_path / "x.db"
    make(path)
    at = page(monkeypatch, path)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.metric  # nothing else is drawn


def test_a_demo_shaped_ledger_renders(monkeypatch, tmp_path):
    """What `kdroute demo` writes today: routed and forced traffic, no slices, no shadows, a
    router without a score histogram, one bench run."""
    path = tmp_path / "demo.db"
    with Store(path) as store:
        store.insert_requests([{
            "id": f"r{i}", "ts": f"2026-12-02T00:33:{i % 60:02d}.{i:03d}+00:00",
            "endpoint": "chat", "requested_model": "kdroute/auto",
            "served_model": "hf:models/demo-teacher" if i % 3 == 0 else "hf:models/demo-student",
            "served_role": "teacher" if i % 3 == 0 else "student", "route_reason": "router",
            "router_score": (i % 10) / 10, "threshold": 0.53, "router_version": "tfidf-x",
            "latency_ms": 20.0 + i, "prompt_tokens": 30, "completion_tokens": 8,
            "cost_usd": 0.0003 if i % 3 == 0 else 0.000006, "teacher_cost_usd": 0.0003,
            "status": 200, "fallback": 0, "stream": 0} for i in range(90)])
        store.insert_requests([{  # the demo's baselines: forced, no threshold
            "id": f"f{i}", "ts": f"2026-12-02T00:34:{i:02d}.000+00:00", "endpoint": "chat",
            "requested_model": "kdroute/student", "served_model": "hf:models/demo-student",
            "served_role": "student", "route_reason": "override", "router_version": "tfidf-x",
            "latency_ms": 9.0, "cost_usd": 0.000006, "teacher_cost_usd": 0.0003, "status": 200}
            for i in range(10)])
        store.save_router({"version": "tfidf-x", "scorer": "tfidf", "threshold": 0.53,
                           "calibration_json": {"teacher_share": 0.3},
                           "metrics_json": {"cv": {"apgr": 0.8, "cpt50": 0.2}}})
        run = store.start_run("bench", {})
        store.record_bench(run, [], [{"role": r, "task": "kdroute_arith", "metric": "exact_match",
                                      "value": v} for r, v in (("teacher", 0.5), ("student", 0.4))],
                           [], output_dir=None,
                           summary={"gate": "FAIL: below retention 0.9 (each): kdroute_arith"})
    at = page(monkeypatch, path)
    assert not at.exception and not at.error
    assert metrics(at)["Requests"] == "100" and metrics(at)["Agreement now"] == "–"
    assert metrics(at)["Router in use"] == "tfidf-x"
    assert any("No shadow evaluations yet" in i.value for i in at.info)
    assert any("Gate: FAIL" in w.value for w in at.warning)


def test_every_time_axis_reads_a_24_hour_utc_clock(monkeypatch, seeded):
    """Vega's default minute labels are a 12-hour clock without am/pm ("07:33" for 19:33)."""
    import json

    at = page(monkeypatch, seeded[0])

    def temporal_axes(node):
        if isinstance(node, dict):
            x = (node.get("encoding") or {}).get("x") or {}
            if x.get("type") == "temporal":
                yield x.get("axis") or {}
            for value in node.values():
                yield from temporal_axes(value)
        elif isinstance(node, list):
            for value in node:
                yield from temporal_axes(value)

    axes = [axis for chart in at.get("vega_lite_chart")
            for axis in temporal_axes(json.loads(chart.proto.spec))]
    assert len(axes) >= 5  # cost, routing, latency, quality timeline...
    for axis in axes:
        assert "'%H:%M'" in axis.get("labelExpr", "") and "%I" not in axis["labelExpr"]
