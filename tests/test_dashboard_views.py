"""The dashboard's read side: the read-only ledger view, the shared savings query, the cubes and
the figures computed from them, checked against the seeded rows read directly."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from kdroute import review
from kdroute.errors import StoreError
from kdroute.monitor.stats import rate_from_sums, weighted_rate
from kdroute.review import overview, quality, traffic
from kdroute.store import Store
from kdroute.store.queries import NONE, Scope
from kdroute.store.synthetic import Synthetic, write_synthetic
from kdroute.store.views import LedgerView


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "ledger.db"
    write_synthetic(path, Synthetic(requests=4000, days=3, seed=3))
    return path


@pytest.fixture(scope="module")
def raw(ledger):
    with sqlite3.connect(ledger) as conn:
        return (pd.read_sql_query("SELECT * FROM requests", conn),
                pd.read_sql_query("SELECT * FROM shadow_evals", conn))


@pytest.fixture(scope="module")
def snap(ledger):
    with LedgerView(ledger) as view:
        return review.load(view)


def test_view_is_read_only_and_reads_while_a_store_writes(ledger, tmp_path):
    path = tmp_path / "live.db"
    with Store(path) as store, LedgerView(path) as view:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            view.conn.execute("INSERT INTO alerts (kind, slice) VALUES ('quality', 'all')")
        store.insert_requests([{"id": "a", "ts": "2026-01-01T00:00:00", "cost_usd": 1.0,
                                "teacher_cost_usd": 2.0}])
        assert view.savings()["requests"] == 1  # the WAL writer's commit is visible
        store.insert_requests([{"id": "b", "ts": "2026-01-01T00:00:01", "cost_usd": 1.0,
                                "teacher_cost_usd": 3.0}])
        assert view.savings()["gross_usd"] == pytest.approx(3.0)


def test_missing_foreign_and_old_files_each_say_what_they_are(tmp_path):
    with pytest.raises(StoreError, match="no ledger there"):
        LedgerView(tmp_path / "nope.db")
    (tmp_path / "notes.db").write_text("not sqlite at all\n" * 100)
    with pytest.raises(StoreError, match="not a kdroute ledger"):
        LedgerView(tmp_path / "notes.db")
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="without kdroute's tables"):
        LedgerView(tmp_path / "other.db")
    Store(tmp_path / "old.db").close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_monitor'")
    with pytest.raises(StoreError, match="kdroute db migrate"):
        LedgerView(tmp_path / "old.db")


def test_savings_has_one_definition_for_store_and_view(ledger):
    with Store(ledger) as store, LedgerView(ledger) as view:
        for since, until in ((None, None), ("2026-01-06", "2026-01-07T12")):
            assert view.savings(Scope(since=since, until=until)) == store.savings(since, until)


def test_scoped_savings_equal_the_rows(ledger, raw):
    requests, shadows = raw
    scope = Scope(since="2026-01-06T03", served_models=("openai/gpt-4o",),
                  slices=("family:arith", "family:count"))
    rows = requests[(requests.ts >= "2026-01-06T03") & (requests.served_model == "openai/gpt-4o")
                    & requests.slice.isin(["family:arith", "family:count"])]
    shadow = shadows[(shadows.ts >= "2026-01-06T03") & shadows.slice.isin(
        ["family:arith", "family:count"]) & shadows.request_id.isin(rows.id)]
    with LedgerView(ledger) as view:
        got = view.savings(scope)
        parts = view.savings_parts(scope, 64)
    gross = rows.teacher_cost_usd.sum() - rows.cost_usd.sum()
    monitor = shadow.teacher_cost_usd.fillna(0).sum() + shadow.student_cost_usd.fillna(0).sum()
    assert got["requests"] == len(rows) > 0
    assert got["gross_usd"] == pytest.approx(gross)
    assert got["monitor_cost_usd"] == pytest.approx(monitor) and monitor > 0
    assert sum(p["requests"] for p in parts) == len(rows)  # the bootstrap's parts add up


def test_null_dimensions_are_matched_by_the_none_label(ledger, raw):
    requests, _ = raw
    with LedgerView(ledger) as view:
        refused = view.savings(Scope(served_models=(NONE,)))["requests"]
    assert refused == requests.served_model.isna().sum() > 0


def test_cube_selection_equals_sql_filtering(ledger, snap, raw):
    requests, _ = raw
    scope = Scope(since="2026-01-05T10", until="2026-01-07T00",
                  router_versions=("ensemble-v2",), slices=("family:mc",))
    cube = review.select(snap.traffic, scope)
    rows = requests[(requests.ts >= "2026-01-05T10") & (requests.ts < "2026-01-07T00")
                    & (requests.router_version == "ensemble-v2") & (requests.slice == "family:mc")]
    assert cube.requests.sum() == len(rows) > 0
    assert cube.cost_usd.sum() == pytest.approx(rows.cost_usd.sum())
    assert cube.student_requests.sum() == (rows.served_role == "student").sum()


def test_rate_from_sums_is_weighted_rate():
    rng = np.random.default_rng(0)
    y, pi = rng.integers(0, 2, 300).astype(float), rng.choice([0.05, 0.25, 1.0], 300)
    w = 1 / pi
    a = weighted_rate(y.tolist(), pi.tolist(), 0.9)
    b = rate_from_sums(300, w.sum(), (w * y).sum(), (w * w).sum(), 0.9)
    assert (a.value, a.lower, a.upper, a.n_eff) == pytest.approx((b.value, b.lower, b.upper,
                                                                  b.n_eff))


def test_current_agreement_is_the_monitors_window(ledger, raw):
    _, shadows = raw
    decided = shadows[shadows.agreement.notna() & (shadows.status == "ok")]
    newest = decided.sort_values("ts", ascending=False).head(200)
    with LedgerView(ledger) as view:
        got = overview.current_agreement(view.recent_verdicts(Scope(), 200), 0.8, 0.95)
    want = weighted_rate(newest.agreement.tolist(), newest.inclusion_prob.tolist(), 0.95)
    assert got.rate == want


def test_slice_rates_equal_weighted_rate_on_the_rows(snap, raw):
    _, shadows = raw
    table = quality.slices(snap, Scope(), 0.95, 0.8).set_index("slice")
    rows = shadows[(shadows.slice == "family:arith") & shadows.agreement.notna()
                   & (shadows.status == "ok")]
    want = weighted_rate(rows.agreement.tolist(), rows.inclusion_prob.tolist(), 0.95)
    assert table.loc["family:arith", "agreement"] == pytest.approx(want.value)
    assert table.loc["family:arith", "lower"] == pytest.approx(want.lower)
    assert table.loc["family:arith", "evaluations"] == want.n
    assert table.loc["family:count", "open alerts"] == "decay, quality"


def test_evaluations_of_no_family_are_their_own_row_and_all_is_the_total(tmp_path):
    db = tmp_path / "l.db"
    with Store(db) as store:
        for i, (slice_, verdict) in enumerate([("all", 1)] * 3 + [("family:sort", 0)] * 2):
            store.insert_shadow({"request_id": f"r{i}", "ts": f"2026-01-01T00:00:0{i}.000+00:00",
                                 "kind": "shadow", "status": "ok", "verdict": verdict,
                                 "agreement": float(verdict),
                                 "inclusion_prob": 1.0, "slice": slice_})
    with LedgerView(db) as view:
        table = quality.slices(review.load(view), Scope(), 0.95, 0.8)
    assert sorted(table["slice"]) == sorted(["(no family)", "family:sort", "all"])
    rows = table.set_index("slice")
    assert rows.loc["all", "evaluations"] == 5 and rows.loc["(no family)", "evaluations"] == 3
    assert rows.loc["all", "agreement"] == pytest.approx(0.6)
    assert rows.loc["family:sort", "state"] == "below floor" and rows.loc["all", "floor"] == 0.8
    # a slice with a floor of its own is judged against it, as the monitor does
    with LedgerView(db) as view:
        own = quality.slices(review.load(view), Scope(), 0.95, 0.8, {"family:sort": 0.0})
    own = own.set_index("slice")
    assert own.loc["family:sort", "floor"] == 0.0 and own.loc["family:sort", "state"] == "above floor"


def test_bootstrap_interval_brackets_the_share_and_narrows_with_data():
    rng = np.random.default_rng(1)

    def parts(n):
        actual, teacher = rng.gamma(2, 0.001, n), rng.gamma(2, 0.003, n)
        g = rng.integers(0, 64, n)
        return [{"requests": int((g == k).sum()), "actual_usd": actual[g == k].sum(),
                 "teacher_equivalent_usd": teacher[g == k].sum(), "monitor_cost_usd": 0.0}
                for k in range(64)]

    small, big = parts(200), parts(20000)
    for p in (small, big):
        share = overview.savings_totals(p)["gross_share"]
        lo, hi = overview.savings_interval(p)["gross_share"]
        assert lo < share < hi
    assert np.diff(overview.savings_interval(big)["gross_share"]) < \
        np.diff(overview.savings_interval(small)["gross_share"]) / 3
    nan = overview.savings_interval([{"requests": 0, "actual_usd": 0, "monitor_cost_usd": 0,
                                      "teacher_equivalent_usd": 0}])["net_share"]
    assert all(np.isnan(nan))


def test_latency_percentiles_from_the_histogram_are_within_3_percent(snap, raw):
    requests, _ = raw
    table = traffic.latency_summary(snap, Scope()).set_index(["served_model", "metric"])
    rows = requests[requests.served_model == "openai/gpt-4o"]
    for q in (50, 95):
        got = table.loc[("openai/gpt-4o", "latency"), f"p{q}"]
        assert got == pytest.approx(np.percentile(rows.latency_ms, q), rel=0.03)


def test_histograms_of_big_ledgers_are_sampled(tmp_path, monkeypatch):
    from kdroute.store import views

    monkeypatch.setattr(views, "HISTOGRAM_ROWS", 500)
    path = tmp_path / "big.db"
    write_synthetic(path, Synthetic(requests=2000, days=1, seed=5))
    with LedgerView(path) as view:
        every = view.sample_every()
        sampled = view.score_histogram("hour", every)["n"].sum()
        full = view.score_histogram("hour")["n"].sum()
    assert every == 4
    assert sampled == pytest.approx(full / 4, rel=0.05)


def test_input_drift_uses_the_calibration_histogram(snap):
    summary, bins = quality.input_drift(snap, Scope())
    assert set(summary.reference) == {"calibration split"}
    assert (summary.PSI >= 0).all()
    burst = quality.input_drift(snap, Scope(since="2026-01-06T02", until="2026-01-06T05"))[0]
    calm = quality.input_drift(snap, Scope(since="2026-01-05T02", until="2026-01-05T05"))[0]
    assert burst.PSI.max() > calm.PSI.max()  # the arithmetic burst moves the scores
    assert bins.groupby(["router_version", "distribution"]).share.sum().round(6).eq(1).all()


def test_input_drift_falls_back_to_the_first_day_without_a_calibration_histogram(tmp_path):
    path = tmp_path / "plain.db"
    with Store(path) as store:
        store.insert_requests([{"id": str(i), "ts": f"2026-01-0{1 + i // 50}T10:00:00",
                                "router_score": (i % 50) / 50, "router_version": "v",
                                "served_model": "m"} for i in range(100)])
        store.save_router({"version": "v", "threshold": 0.5, "calibration_json": {}})
    with LedgerView(path) as view:
        summary, _ = quality.input_drift(review.load(view), Scope())
    assert summary.reference.tolist() == ["first day of this version"]
    assert summary.PSI.iloc[0] == pytest.approx(0.0, abs=1e-9)


def test_disagreements_download_is_what_distill_reads(ledger, tmp_path):
    from kdroute.distill.data import read_pairs

    with LedgerView(ledger) as view:
        pairs = view.disagreements(Scope(slices=("family:arith",)))
    text, n = quality.distill_jsonl(pairs)
    assert n == len(pairs) > 0
    (tmp_path / "d.jsonl").write_text(text)
    rows = read_pairs(tmp_path / "d.jsonl")
    assert len(rows) == n and all(r["family"] == "arith" for r in rows)
    first = pairs.iloc[0]
    assert rows[0]["prompt"] == first.prompt_text
    assert rows[0]["response"] == first.teacher_response != rows[0]["student_response"]


def test_prompt_of_unwraps_a_single_user_turn_only():
    assert quality.prompt_of("user: What is 2 + 2?") == "What is 2 + 2?"
    chat = "system: be brief\nuser: hi"
    assert quality.prompt_of(chat) == chat
    assert quality.prompt_of("What is 2 + 2?") == "What is 2 + 2?"
    text, n = quality.distill_jsonl(pd.DataFrame([{
        "id": 1, "ts": "t", "slice": None, "method": "m", "score": None, "prompt_text": None,
        "student_response": "a", "teacher_response": "b"}]))
    assert (text, n) == ("", 0)  # pairs stored without text are left out


def test_synthetic_ledger_is_deterministic(tmp_path):
    def dump(path):
        write_synthetic(path, Synthetic(requests=500, days=1, seed=9))
        with sqlite3.connect(path) as conn:
            return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                    for t in ("requests", "shadow_evals", "alerts", "training_metrics")]

    a, b = dump(tmp_path / "a.db"), dump(tmp_path / "b.db")
    assert a[:3] == b[:3]
    assert [r[2:-1] for r in a[3]] == [r[2:-1] for r in b[3]]  # but run ids and clocks
    kinds = {r[9] for r in a[1]}
    assert kinds == {"shadow", "probe"}


def test_routers_table_reads_offline_metrics(snap):
    table = traffic.routers(snap, Scope()).set_index("version")
    assert table.loc["ensemble-v2", "APGR"] == pytest.approx(0.66)
    assert table.loc["tfidf-v1", "requests"] > 0
    metrics = json.loads(snap.routers.set_index("version").loc["tfidf-v1", "metrics_json"])
    assert table.loc["tfidf-v1", "CPT(50%)"] == metrics["holdout"]["cpt50"]


def test_traffic_cube_reads_the_hourly_index_without_sorting(ledger):
    with LedgerView(ledger) as view:
        sql = []
        view.conn.set_trace_callback(sql.append)
        hourly = view.traffic("hour")
        view.conn.set_trace_callback(None)
        plan = " ".join(r[-1] for r in view.conn.execute(f"EXPLAIN QUERY PLAN {sql[-1]}"))
        daily = view.traffic("day")
    assert "USING INDEX requests_by_hour" in plan and "TEMP B-TREE" not in plan
    by_day = hourly.assign(bucket=hourly.bucket.str[:10]).groupby(
        ["bucket", "served_model", "slice"])[["requests", "cost_usd"]].sum()
    other = daily.groupby(["bucket", "served_model", "slice"])[["requests", "cost_usd"]].sum()
    pd.testing.assert_frame_equal(by_day, other)
