"""The ledger: the only code that writes SQL. Every stage records into it; the dashboard reads it."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from kdroute.errors import StoreError
from kdroute.store import queries
from kdroute.store.migrations import migrations

if TYPE_CHECKING:
    import pandas as pd


def _dicts(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def connect(path: str | Path, busy_timeout_ms: int = 5000) -> Database:
    """Open SQLite in WAL mode with a busy timeout; usable from the thread that opened it."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open ledger {path}: {exc}") from None
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db = Database(conn)
    if str(path) != ":memory:":
        db.enable_wal()
    conn.execute("PRAGMA synchronous = NORMAL")  # safe under WAL, much faster commits
    return db


class Store:
    """A handle on the ledger. Opening it applies pending migrations."""

    def __init__(self, path: str | Path = ":memory:", busy_timeout_ms: int = 5000):
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.db = connect(self.path, busy_timeout_ms)
        try:
            migrations.apply(self.db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate ledger {path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings) -> Store:
        return cls(settings.path(settings.store.path), settings.store.busy_timeout_ms)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- runs -------------------------------------------------------------------------------

    def start_run(self, kind: str, config: Mapping[str, Any] | None = None,
                  output_dir: str | None = None) -> str:
        run_id = f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.db["runs"].insert({
            "id": run_id, "kind": kind, "status": "running", "started_at": now(),
            "config_json": json.dumps(config or {}, default=str), "output_dir": output_dir,
        })
        return run_id

    def finish_run(self, run_id: str, status: str = "done", error: str | None = None) -> None:
        self.db["runs"].update(run_id, {"status": status, "finished_at": now(), "error": error})

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run failed and drop any partial results it wrote, in one transaction."""
        with self.db.atomic():
            for table in ("bench_results", "bench_samples"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            self.finish_run(run_id, "failed", error)

    def run(self, run_id: str) -> dict | None:
        rows = list(self.db["runs"].rows_where("id = ?", [run_id]))
        return rows[0] if rows else None

    def latest_run(self, kind: str, status: str = "done") -> str | None:
        """The id of the most recently started run of this kind and status, if any (start times
        have one-second resolution: insertion order breaks ties)."""
        rows = list(self.db["runs"].rows_where("kind = ? AND status = ?", [kind, status],
                                               order_by="started_at DESC, rowid DESC", limit=1))
        return rows[0]["id"] if rows else None

    # --- models and training ----------------------------------------------------------------

    def upsert_model(self, fingerprint: str, reference: str, kind: str, **fields: Any) -> None:
        row = {"fingerprint": fingerprint, "reference": reference, "kind": kind,
               "created_at": now(), **fields}
        if isinstance(row.get("card_json"), dict):
            row["card_json"] = json.dumps(row["card_json"])
        self.db["models"].upsert(row, pk="fingerprint")

    def log_training_metrics(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
        stamped = [{"run_id": run_id, "created_at": now(), **r} for r in rows]
        self.db["training_metrics"].insert_all(stamped)

    # --- bench ------------------------------------------------------------------------------

    def save_bench(self, run_id: str, results: Iterable[Mapping[str, Any]],
                   samples: Iterable[Mapping[str, Any]]) -> None:
        """Results and samples of one model land together or not at all."""
        stamp = now()
        with self.db.atomic():
            self.db["bench_results"].insert_all(
                {"run_id": run_id, "created_at": stamp, **r} for r in results)
            self.db["bench_samples"].insert_all(({"run_id": run_id, **s} for s in samples),
                                                batch_size=500)

    def record_bench(self, run_id: str, models: Iterable[Mapping[str, Any]],
                     results: Iterable[Mapping[str, Any]], samples: Iterable[Mapping[str, Any]],
                     *, output_dir: str | None, summary: Mapping[str, Any]) -> None:
        """Everything a finished bench run keeps, in one transaction: its models (`models` rows),
        result and sample rows, where its report is, its summary, and status done. On any error
        nothing of it is kept and the run is still running, for the caller's `fail_run`."""
        with self.db.atomic():
            for model in models:
                self.upsert_model(**model)
            self.save_bench(run_id, results, samples)
            fields = {"config_json": json.dumps(summary, default=str)}
            if output_dir is not None:
                fields["output_dir"] = output_dir
            self.db["runs"].update(run_id, fields)
            self.finish_run(run_id)

    def import_recorded(self, config: Mapping[str, Any], models: Iterable[Mapping[str, Any]],
                        samples: Iterable[Mapping[str, Any]]) -> str:
        """Recorded teacher/student results (`kdroute route import`) as one finished
        `route-import` run, in one transaction: the run, its models and its sample rows land
        together or not at all. Returns the run id."""
        with self.db.atomic():
            run_id = self.start_run("route-import", config)
            for model in models:
                self.upsert_model(**model)
            self.save_bench(run_id, [], samples)
            self.finish_run(run_id)
        return run_id

    def cached_bench(self, cache_key: str) -> tuple[list[dict], list[dict]] | None:
        """Results and samples of the newest finished run with this cache key, if any."""
        row = self.db.execute(
            "SELECT r.run_id FROM bench_results r JOIN runs ON runs.id = r.run_id "
            "WHERE r.cache_key = ? AND runs.status = 'done' ORDER BY r.created_at DESC LIMIT 1",
            [cache_key]).fetchone()
        if row is None:
            return None
        run_id = row[0]
        results = list(self.db["bench_results"].rows_where(
            "run_id = ? AND cache_key = ?", [run_id, cache_key]))
        samples = list(self.db["bench_samples"].rows_where(
            "run_id = ? AND cache_key = ?", [run_id, cache_key]))
        return results, samples

    # --- routers ----------------------------------------------------------------------------

    def save_router(self, row: Mapping[str, Any]) -> None:
        row = dict(row, created_at=row.get("created_at") or now())
        for key in ("calibration_json", "metrics_json"):
            if not isinstance(row.get(key), str | None):
                row[key] = json.dumps(row[key], default=str)
        self.db["routers"].upsert(row, pk="version")

    # --- gateway and monitor ----------------------------------------------------------------

    def insert_requests(self, rows: list[Mapping[str, Any]]) -> None:
        with self.db.atomic():
            self.db["requests"].insert_all(rows, pk="id", replace=True)

    def insert_shadow(self, row: Mapping[str, Any]) -> int:
        return self.db["shadow_evals"].insert(dict(row, ts=row.get("ts") or now())).last_pk

    def insert_shadows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Several evaluations in one transaction (the monitor flushes once per poll; imports and
        synthetic ledgers write many at once)."""
        stamp = now()
        with self.db.atomic():
            self.db["shadow_evals"].insert_all((dict(r, ts=r.get("ts") or stamp) for r in rows),
                                               alter=False)

    def open_alert(self, row: Mapping[str, Any]) -> int:
        return self.db["alerts"].insert(dict(row, opened_at=row.get("opened_at") or now())).last_pk

    def open_alert_once(self, row: Mapping[str, Any]) -> int | None:
        """Open an alert unless one of the same kind and slice is open already (another worker
        may have opened it first): its id if this call opened it, else None."""
        row = dict(row, opened_at=row.get("opened_at") or now(), resolved_at=None)
        columns = ", ".join(f"[{k}]" for k in row)
        with self.db.atomic():
            cursor = self.db.execute(
                f"INSERT OR IGNORE INTO alerts ({columns}) VALUES "
                f"({', '.join('?' * len(row))})", list(row.values()))
            return cursor.lastrowid if cursor.rowcount == 1 else None

    def resolve_alert(self, alert_id: int, value: float | None = None,
                      bound: float | None = None) -> None:
        self.db["alerts"].update(alert_id, {"resolved_at": now(), "resolved_value": value,
                                            "resolved_bound": bound})

    def resolve_open_alert(self, kind: str, slice_: str, value: float | None = None,
                           bound: float | None = None) -> dict | None:
        """Resolve the open alert of (kind, slice): the resolved row if this call resolved it,
        None if none was open (e.g. another worker resolved it first)."""
        with self.db.atomic():
            row = self.db.execute(
                "SELECT id FROM alerts WHERE kind = ? AND slice = ? AND resolved_at IS NULL",
                [kind, slice_]).fetchone()
            if row is None:
                return None
            cursor = self.db.execute(
                "UPDATE alerts SET resolved_at = ?, resolved_value = ?, resolved_bound = ? "
                "WHERE id = ? AND resolved_at IS NULL", [now(), value, bound, row[0]])
            if cursor.rowcount != 1:
                return None
        return self.db["alerts"].get(row[0])

    def open_alerts(self, kind: str | None = None) -> list[dict]:
        where = "resolved_at IS NULL" + (" AND kind = ?" if kind else "")
        return list(self.db["alerts"].rows_where(where, [kind] if kind else [], order_by="id"))

    def alerts(self, limit: int = 50) -> list[dict]:
        """The most recent alerts, open or resolved, newest first."""
        return list(self.db["alerts"].rows_where(order_by="id DESC", limit=limit))

    # Columns the monitor's detector reads per evaluation.
    _EVAL_COLUMNS = "id, kind, verdict, inclusion_prob, slice, router_score, ts"

    def evaluations_after(self, last_id: int, limit: int = 10000) -> list[dict]:
        """Scored shadow/probe rows (status ok, a verdict) with id > last_id, oldest first."""
        cursor = self.db.execute(
            f"SELECT {self._EVAL_COLUMNS} FROM shadow_evals WHERE id > ? AND status = 'ok' "
            "AND verdict IS NOT NULL ORDER BY id LIMIT ?", [last_id, limit])
        return _dicts(cursor)

    def last_evaluation_id(self) -> int:
        """The newest shadow_evals id (0 when empty): where a catch-up leaves a reader."""
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM shadow_evals").fetchone()[0]

    def latest_evaluations(self, n: int, student_model: str | None = None) -> list[dict]:
        """The last n scored shadow/probe rows, oldest first (a detector's catch-up); with
        `student_model`, only that student's (another student's answers say nothing of it)."""
        model, params = ("AND student_model = ? ", [student_model]) if student_model else ("", [])
        cursor = self.db.execute(
            f"SELECT {self._EVAL_COLUMNS} FROM shadow_evals WHERE status = 'ok' "
            f"AND verdict IS NOT NULL {model}ORDER BY id DESC LIMIT ?", [*params, n])
        return _dicts(cursor)[::-1]

    def monitor_spend(self, since: str) -> float:
        """USD the monitor spent since `since` (shadow teacher, probe student and judge calls)."""
        return self.db.execute(
            "SELECT COALESCE(SUM(COALESCE(teacher_cost_usd, 0) + COALESCE(student_cost_usd, 0) "
            "+ COALESCE(judge_cost_usd, 0)), 0) FROM shadow_evals WHERE ts >= ?",
            [since]).fetchone()[0]

    def routed_scores(self, router_version: str | None, n: int, oldest: bool = False
                      ) -> list[tuple[str, float, float]]:
        """(ts, router score, threshold) of n auto-routed requests of this router version: the
        newest, or with `oldest` the first ones (the input-drift reference), oldest first."""
        version = "router_version IS ?" if router_version is None else "router_version = ?"
        cursor = self.db.execute(
            "SELECT ts, router_score, threshold FROM requests WHERE router_score IS NOT NULL AND "
            f"route_reason IN ('router', 'breaker', 'fallback') AND {version} "
            f"ORDER BY ts {'ASC' if oldest else 'DESC'} LIMIT ?", [router_version, n])
        rows = [(str(ts), float(s), float(t)) for ts, s, t in cursor.fetchall()]
        return rows if oldest else rows[::-1]

    def shadow_counts(self, since: str | None = None) -> list[dict]:
        """Background evaluations by kind, status and method (with their cost), since `since`."""
        where, params = queries.where(queries.Scope(since=since))
        cursor = self.db.execute(
            "SELECT kind, status, method, COUNT(*) AS n, SUM(verdict) AS agreed, "
            "COALESCE(SUM(COALESCE(teacher_cost_usd, 0) + COALESCE(student_cost_usd, 0) "
            f"+ COALESCE(judge_cost_usd, 0)), 0) AS cost_usd FROM shadow_evals {where} "
            "GROUP BY kind, status, method ORDER BY kind, status, method", params)
        return _dicts(cursor)

    def shadow_pairs(self, student_model: str | None = None) -> list[dict]:
        """Scored shadow evaluations with their prompt, oldest first: student-served requests the
        teacher answered again in the background (the learning loop's labelled traffic). The
        prompt is the pair's own text, else the request log's; rows with neither are skipped.
        `inclusion_prob` is the chance the request was sampled (1/it weighs it back)."""
        model = "" if student_model is None else "AND s.student_model = ? "
        cursor = self.db.execute(
            "SELECT s.id, s.ts, s.request_id, COALESCE(s.prompt_text, r.prompt_text) AS prompt, "
            "s.verdict, COALESCE(s.inclusion_prob, 1.0) AS inclusion_prob, s.teacher_model, "
            "s.student_model, s.teacher_response, COALESCE(s.student_response, r.response_text) "
            "AS student_response, s.router_version, s.slice FROM shadow_evals s "
            "LEFT JOIN requests r ON r.id = s.request_id WHERE COALESCE(s.kind, 'shadow') = "
            "'shadow' AND s.status = 'ok' AND s.verdict IS NOT NULL AND "
            f"COALESCE(s.prompt_text, r.prompt_text) IS NOT NULL {model}ORDER BY s.id",
            [] if student_model is None else [student_model])
        return _dicts(cursor)

    def family_prompts(self, limit: int = 20000) -> list[tuple[str, str]]:
        """(prompt, task family) of distinct bench prompts: what the monitor's slice classifier
        learns from."""
        cursor = self.db.execute(
            "SELECT prompt, family FROM bench_samples WHERE family IS NOT NULL AND family != '' "
            "AND prompt IS NOT NULL GROUP BY prompt, family LIMIT ?", [limit])
        return [(p, f) for p, f in cursor.fetchall()]

    def savings(self, since: str | None = None, until: str | None = None) -> dict[str, float]:
        """What routing saved against "always teacher" over [since, until) (ISO timestamps):
        gross, monitor cost and net (`kdroute.store.queries.savings_totals` defines them; the
        dashboard runs the same query on its read-only connection)."""
        return queries.savings(self.db.conn, queries.Scope(since=since, until=until))

    # --- reading ----------------------------------------------------------------------------

    def count(self, table: str) -> int:
        return self.db[table].count

    def stats(self) -> dict[str, int]:
        return {name: self.db[name].count for name in sorted(self.db.table_names())
                if not name.startswith("_")}

    def frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        """Any read query as a DataFrame (for the dashboard and reports)."""
        import pandas as pd

        return pd.read_sql_query(sql, self.db.conn, params=list(params))

    def table_frame(self, table: str) -> pd.DataFrame:
        """A whole table as a DataFrame."""
        if table not in self.db.table_names():
            raise StoreError(f"no table {table!r} in the ledger")
        return self.frame(f"SELECT * FROM [{table}]")

    def requests_frame(self, since: str | None = None) -> pd.DataFrame:
        """Gateway requests from `since` (an ISO timestamp; None = all), oldest first."""
        where, params = queries.where(queries.Scope(since=since))
        return self.frame(f"SELECT * FROM requests {where} ORDER BY ts", params)
