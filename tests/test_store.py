import json
import sqlite3
import threading

import pytest

from kdroute.store import BatchedWriter, Store
from kdroute.store.migrations import migrations

EXPECTED_COLUMNS = {
    "runs": ["id", "kind", "status", "started_at", "finished_at", "config_json", "output_dir",
             "error"],
    "models": ["fingerprint", "reference", "kind", "params", "input_price_per_1m",
               "output_price_per_1m", "card_json", "created_at"],
    "training_metrics": ["id", "run_id", "step", "split", "loss", "kd_loss", "ce_loss", "lr",
                         "tokens_per_s", "created_at"],
    "bench_results": ["id", "run_id", "model_fingerprint", "role", "task", "task_version",
                      "metric", "value", "stderr", "n", "lm_eval_version", "num_fewshot",
                      "limit_n", "cache_key", "created_at"],
    "bench_samples": ["id", "run_id", "model_fingerprint", "role", "task", "doc_id", "prompt",
                      "target", "response", "score", "family", "difficulty", "cache_key"],
    "routers": ["version", "scorer", "threshold", "calibration_json", "teacher", "student",
                "metrics_json", "path", "created_at"],
    "requests": ["id", "ts", "endpoint", "requested_model", "served_model", "served_role",
                 "route_reason", "router_score", "threshold", "router_version", "latency_ms",
                 "ttft_ms", "prompt_tokens", "completion_tokens", "cost_usd", "teacher_cost_usd",
                 "status", "error", "fallback", "stream", "key_id", "prompt_text",
                 "response_text", "slice", "stream_outcome"],
    "shadow_evals": ["id", "request_id", "ts", "teacher_model", "teacher_response", "agreement",
                     "method", "teacher_cost_usd", "latency_ms", "kind", "status", "error",
                     "student_model", "prompt_text", "student_response", "score", "verdict",
                     "inclusion_prob", "router_score", "threshold", "router_version", "slice",
                     "student_cost_usd", "judge_cost_usd"],
    "alerts": ["id", "kind", "opened_at", "resolved_at", "statistic", "value", "bound", "window",
               "threshold", "message", "slice", "n", "resolved_value", "resolved_bound"],
}


def test_migrations_from_empty_db_create_exact_columns(tmp_path):
    with Store(tmp_path / "new.db") as store:
        for table, columns in EXPECTED_COLUMNS.items():
            assert [c.name for c in store.db[table].columns] == columns, table
        applied = [m.name for m in migrations.applied(store.db)]
        assert applied[:2] == ["m001_initial", "m002_monitor"]
        assert "m004_gateway_stream_outcome" in applied
        assert not migrations.pending(store.db)


def test_one_open_alert_per_kind_and_slice(tmp_path):
    with Store(tmp_path / "a.db") as store:
        insert = ("INSERT OR IGNORE INTO alerts (kind, slice, opened_at) "
                  "VALUES ('quality', ?, '2026-01-01')")
        store.db.execute(insert, ["all"])
        store.db.execute(insert, ["all"])  # a second worker finds it open: ignored
        store.db.execute(insert, ["family:arith"])
        assert store.db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 2
        store.db.execute("UPDATE alerts SET resolved_at = 'x' WHERE slice = 'all'")
        store.db.execute(insert, ["all"])  # once resolved, a new alert may open
        assert store.db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 3


def test_reopening_applies_nothing_twice(tmp_path):
    Store(tmp_path / "a.db").close()
    with Store(tmp_path / "a.db") as store:
        names = [m.name for m in migrations.applied(store.db)]
        assert len(names) == len(set(names))


def test_wal_mode_and_busy_timeout(tmp_path):
    with Store(tmp_path / "wal.db", busy_timeout_ms=1234) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 1234


def _request_row(thread: int, i: int) -> dict:
    return {"id": f"t{thread}-{i}", "ts": "2026-01-01T00:00:00", "served_model": "student",
            "status": 200, "cost_usd": 0.001, "teacher_cost_usd": 0.01}


def test_batched_writer_loses_no_rows_from_concurrent_threads(tmp_path):
    path = tmp_path / "w.db"
    Store(path).close()
    writer = BatchedWriter(str(path), queue_size=100_000, batch_size=128,
                           flush_interval_s=0.05).start()

    def send(thread: int) -> None:
        for i in range(500):
            assert writer.put(_request_row(thread, i))

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert writer.written == 4000 and writer.dropped == 0 and writer.failed == 0
    count = sqlite3.connect(path).execute("SELECT count(*) FROM requests").fetchone()[0]
    assert count == 4000


def test_batched_writer_counts_drops_when_queue_is_full(tmp_path):
    path = tmp_path / "d.db"
    Store(path).close()
    writer = BatchedWriter(str(path), queue_size=10)  # not started: nothing drains the queue
    accepted = sum(writer.put(_request_row(0, i)) for i in range(25))
    assert accepted == 10 and writer.dropped == 15
    writer.start().close()
    assert writer.written == 10


def test_fail_run_removes_partial_bench_rows(tmp_store):
    run = tmp_store.start_run("bench")
    tmp_store.save_bench(run, [{"task": "t", "metric": "acc", "value": 0.5, "cache_key": "k"}],
                         [{"task": "t", "doc_id": 0, "score": 1.0, "cache_key": "k"}])
    assert tmp_store.cached_bench("k") is None  # run not finished: not reusable
    tmp_store.fail_run(run, "boom")
    assert tmp_store.count("bench_results") == 0 and tmp_store.count("bench_samples") == 0
    assert tmp_store.run(run)["status"] == "failed"


def test_cached_bench_returns_finished_run(tmp_store):
    run = tmp_store.start_run("bench")
    tmp_store.save_bench(run, [{"task": "t", "metric": "acc", "value": 0.5, "cache_key": "k"}],
                         [{"task": "t", "doc_id": 0, "score": 1.0, "cache_key": "k"}])
    tmp_store.finish_run(run)
    results, samples = tmp_store.cached_bench("k")
    assert results[0]["value"] == 0.5 and samples[0]["score"] == 1.0


def test_record_bench_keeps_all_of_a_run_or_nothing(tmp_store):
    run = tmp_store.start_run("bench")
    model = {"fingerprint": "fp", "reference": "hf:m", "kind": "hf", "params": 10}
    result = {"task": "t", "metric": "acc", "value": 0.5, "cache_key": "k"}
    bad_sample = {"task": "t", "doc_id": 0, "score": 1.0, "no_such_column": 1}
    with pytest.raises(sqlite3.OperationalError):
        tmp_store.record_bench(run, [model], [result], [bad_sample], output_dir="out",
                               summary={"gate": "PASS"})
    for table in ("models", "bench_results", "bench_samples"):
        assert tmp_store.count(table) == 0, table
    assert tmp_store.run(run)["status"] == "running" and tmp_store.run(run)["output_dir"] is None
    sample = {"task": "t", "doc_id": 0, "score": 1.0, "cache_key": "k"}
    tmp_store.record_bench(run, [model], [result], [sample], output_dir="out",
                           summary={"gate": "PASS"})
    row = tmp_store.run(run)
    assert row["status"] == "done" and row["output_dir"] == "out"
    assert json.loads(row["config_json"]) == {"gate": "PASS"}
    assert tmp_store.count("models") == 1 and tmp_store.cached_bench("k") is not None


def test_read_helpers_return_dataframes(tmp_store):
    tmp_store.insert_requests([_request_row(0, i) for i in range(3)])
    frame = tmp_store.requests_frame()
    assert list(frame["id"]) == ["t0-0", "t0-1", "t0-2"]
    assert frame["teacher_cost_usd"].sum() == 0.03
    assert tmp_store.requests_frame(since="2026-01-01T00:00:00").shape[0] == 3
    assert tmp_store.requests_frame(since="2026-01-02").empty


def test_latest_run_is_the_newest_finished_run_of_its_kind(tmp_store):
    assert tmp_store.latest_run("bench") is None
    first = tmp_store.start_run("bench", {})
    tmp_store.finish_run(first)
    second = tmp_store.start_run("bench", {})
    tmp_store.finish_run(second)
    failed = tmp_store.start_run("bench", {})
    tmp_store.fail_run(failed, "boom")
    other = tmp_store.start_run("distill", {})
    tmp_store.finish_run(other)
    assert tmp_store.latest_run("bench") == second
    assert tmp_store.latest_run("bench", "failed") == failed


def test_savings_net_of_shadow_and_probe_costs(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.insert_requests([
            {"id": "a", "ts": "2026-01-01T00:00:00", "cost_usd": 0.001, "teacher_cost_usd": 0.010},
            {"id": "b", "ts": "2026-01-01T01:00:00", "cost_usd": 0.020, "teacher_cost_usd": 0.020},
            {"id": "c", "ts": "2026-01-02T00:00:00", "cost_usd": 0.002, "teacher_cost_usd": 0.030},
        ])
        store.insert_shadow({"request_id": "a", "ts": "2026-01-01T00:00:01", "kind": "shadow",
                             "teacher_cost_usd": 0.004})
        store.insert_shadow({"request_id": "b", "ts": "2026-01-01T01:00:01", "kind": "probe",
                             "student_cost_usd": 0.0005})
        day1 = store.savings(since="2026-01-01", until="2026-01-02")
        assert day1["requests"] == 2
        assert day1["gross_usd"] == pytest.approx(0.009)
        assert day1["monitor_cost_usd"] == pytest.approx(0.0045)
        assert day1["net_usd"] == pytest.approx(0.0045)
        assert day1["net_share"] == pytest.approx(0.0045 / 0.030)
        total = store.savings()
        assert total["gross_usd"] == pytest.approx(0.037)
        assert total["net_usd"] == pytest.approx(0.0325)
        assert Store(tmp_path / "empty.db").savings()["gross_share"] == 0.0
