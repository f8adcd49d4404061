"""Read-only views of the ledger for the dashboard: aggregation in SQL, DataFrames out.

`LedgerView` opens the file with a `mode=ro` URI (plus `query_only`), so it can never write and
reads alongside a gateway writing in WAL mode. Request-sized tables are never read row by row:
each helper returns a "cube", the sums and counts grouped by time bucket and by every filter
dimension (served model, router version, slice), so a filter change is a pandas selection of a
cached cube instead of another scan of a million rows. Latencies and router scores come as
histograms (percentiles are read off them), from a systematic sample on ledgers over 100,000
requests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdroute.errors import StoreError
from kdroute.store import queries
from kdroute.store.queries import NONE, Scope

if TYPE_CHECKING:
    import pandas as pd

# Time buckets: the first N characters of an ISO timestamp ("2026-01-05T13:07").
BUCKETS = {"minute": 16, "hour": 13, "day": 10}
LATENCY_BINS_PER_DECADE = 40  # bin edges 10^(k/40): ~6 % wide, percentiles within ~3 %
SCORE_BINS = 20  # router-score histogram: 20 equal bins on [0, 1]
HISTOGRAM_ROWS = 100_000  # requests read for the latency and score histograms
NEEDED_MIGRATION = "m002_monitor"


def _dims(prefix: str = "") -> str:
    return (f"COALESCE({prefix}router_version, '{NONE}') AS router_version, "
            f"COALESCE({prefix}slice, '{NONE}') AS slice")


class LedgerView:
    """A read-only handle on a kdroute ledger. Raises StoreError with one line when the file is
    missing, is not SQLite, is not a kdroute ledger, or predates the monitor schema."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no ledger there (run `kdroute serve` or `kdroute "
                             "demo` to create one, or pass --db)")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            # autocommit: no implicit transaction ever holds an old snapshot open
            self.conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000,
                                        check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA query_only = 1")
            tables = {r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a kdroute ledger ({exc})") from None
        if not {"_sqlite_migrations", "requests", "shadow_evals", "alerts"} <= tables:
            self.conn.close()
            raise StoreError(f"{self.path}: not a kdroute ledger (an SQLite file without "
                             "kdroute's tables)")
        applied = {r[0] for r in self.conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'kdroute'")}
        if NEEDED_MIGRATION not in applied:
            self.conn.close()
            raise StoreError(f"{self.path}: the ledger's schema is older than this kdroute "
                             "(run `kdroute db migrate` on it)")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LedgerView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def consistent(self) -> Iterator[LedgerView]:
        """One read transaction: every query inside sees the same state of the ledger, however
        many rows a gateway commits meanwhile."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            self.conn.execute("COMMIT")

    def frame(self, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
        import pandas as pd

        return pd.read_sql_query(sql, self.conn, params=list(params))

    # --- what is there -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per table the dashboard reads (0 everywhere on a brand-new ledger)."""
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("requests", "shadow_evals", "alerts", "routers", "runs",
                          "bench_results", "training_metrics")}

    def span(self) -> tuple[str | None, str | None]:
        """First and last request timestamps (the ts index makes this instant)."""
        return self.conn.execute("SELECT MIN(ts), MAX(ts) FROM requests").fetchone()

    def bucket_unit(self) -> str:
        """The finest time bucket that keeps charts readable: minutes for under 6 hours of
        traffic, hours for under 10 days, else days."""
        first, last = self.span()
        if first is None:
            return "hour"
        from datetime import datetime

        hours = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds() / 3600
        return "minute" if hours < 6 else "hour" if hours < 240 else "day"

    # --- request cubes -----------------------------------------------------------------------

    def traffic(self, unit: str) -> pd.DataFrame:
        """Requests per bucket × served model × router version × slice × route reason × status:
        counts (all, teacher-served, student-served, fallbacks) and costs. Roles and fallbacks
        are sums, not keys. Hour and day cubes are summed from the hourly groups, which SQLite
        reads in order from the `requests_by_hour` index (m003) without sorting the table."""
        width = BUCKETS["minute"] if unit == "minute" else BUCKETS["hour"]
        frame = self.frame(
            f"SELECT substr(ts, 1, {width}) AS bucket, served_model, router_version, slice, "
            "route_reason, status, COUNT(*) AS requests, "
            "COALESCE(SUM(served_role = 'teacher'), 0) AS teacher_requests, "
            "COALESCE(SUM(served_role = 'student'), 0) AS student_requests, "
            "SUM(COALESCE(fallback, 0) <> 0) AS fallbacks, "
            "COALESCE(SUM(cost_usd), 0) AS cost_usd, "
            "COALESCE(SUM(teacher_cost_usd), 0) AS teacher_cost_usd "
            "FROM requests GROUP BY 1, 2, 3, 4, 5, 6")
        frame["route_reason"] = frame["route_reason"].fillna("error")
        frame[["served_model", "router_version", "slice"]] = frame[
            ["served_model", "router_version", "slice"]].fillna(NONE)
        if unit != "day":
            return frame
        frame["bucket"] = frame["bucket"].str[:BUCKETS["day"]]
        keys = ["bucket", "served_model", "router_version", "slice", "route_reason", "status"]
        return frame.groupby(keys, as_index=False, dropna=False).sum()

    def sample_every(self) -> int:
        """Histograms of big ledgers are read from every k-th request (rowid modulo k), about
        HISTOGRAM_ROWS of them: percentiles and PSI of 100,000 requests are as good as of all,
        and sorting a million rows per histogram is what makes a first render slow."""
        n = self.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        return max(1, -(-n // HISTOGRAM_ROWS))

    def latency_histogram(self, unit: str, every: int = 1) -> pd.DataFrame:
        """Latency and time-to-first-token counts per log bin (`metric` latency | ttft; bin k
        covers [10^(k/40), 10^((k+1)/40)) ms) per bucket × served model × version × slice, of
        every `every`-th request."""
        b, k = BUCKETS[unit], LATENCY_BINS_PER_DECADE
        sample = f" AND rowid % {int(every)} = 0" if every > 1 else ""
        parts = [
            f"SELECT substr(ts, 1, {b}) AS bucket, COALESCE(served_model, '{NONE}') AS "
            f"served_model, {_dims()}, '{name}' AS metric, "
            f"CAST(floor(log10(max({col}, 0.01)) * {k}) AS INTEGER) AS bin, COUNT(*) AS n "
            f"FROM requests WHERE {col} IS NOT NULL{sample} GROUP BY 1, 2, 3, 4, 5, 6"
            for name, col in (("latency", "latency_ms"), ("ttft", "ttft_ms"))]
        return self.frame(" UNION ALL ".join(parts))

    def score_histogram(self, unit: str, every: int = 1) -> pd.DataFrame:
        """Router scores per bin (bin k covers [k/20, (k+1)/20)) per bucket × served model ×
        version × slice, of every `every`-th request."""
        b = BUCKETS[unit]
        sample = f" AND rowid % {int(every)} = 0" if every > 1 else ""
        return self.frame(
            f"SELECT substr(ts, 1, {b}) AS bucket, COALESCE(served_model, '{NONE}') AS "
            f"served_model, {_dims()}, "
            f"MIN(CAST(router_score * {SCORE_BINS} AS INTEGER), {SCORE_BINS - 1}) AS bin, "
            f"COUNT(*) AS n FROM requests WHERE router_score IS NOT NULL{sample} "
            "GROUP BY 1, 2, 3, 4, 5")

    # --- shadow evaluations ------------------------------------------------------------------

    def shadow(self, unit: str) -> pd.DataFrame:
        """Shadow and probe evaluations per bucket × served model × version × slice × kind ×
        method: rows, failures, decided rows, the weighted sums a rate is made of (w = 1/π),
        disagreements and the monitor's costs."""
        b = BUCKETS[unit]
        decided = "s.agreement IS NOT NULL AND COALESCE(s.status, 'ok') = 'ok'"
        w = "1.0 / COALESCE(NULLIF(s.inclusion_prob, 0), 1.0)"
        return self.frame(
            f"SELECT substr(s.ts, 1, {b}) AS bucket, COALESCE({queries.SHADOW_SERVED_MODEL}, "
            f"'{NONE}') AS served_model, {_dims('s.')}, COALESCE(s.kind, 'shadow') AS kind, "
            f"COALESCE(s.method, '{NONE}') AS method, COUNT(*) AS rows, "
            "SUM(COALESCE(s.status, 'ok') <> 'ok') AS failed, "
            f"SUM({decided}) AS decided, SUM(CASE WHEN {decided} THEN {w} END) AS sum_w, "
            f"SUM(CASE WHEN {decided} THEN {w} * s.agreement END) AS sum_wy, "
            f"SUM(CASE WHEN {decided} THEN {w} * {w} END) AS sum_w2, "
            f"SUM({decided} AND s.agreement < 0.5) AS disagreements, "
            "COALESCE(SUM(s.teacher_cost_usd), 0) AS teacher_cost_usd, "
            "COALESCE(SUM(s.student_cost_usd), 0) AS student_cost_usd "
            "FROM shadow_evals s GROUP BY 1, 2, 3, 4, 5, 6")

    def recent_verdicts(self, scope: Scope, limit: int) -> pd.DataFrame:
        """The newest `limit` decided evaluations in scope (agreement, inclusion_prob): the
        window the monitor's current agreement is computed on."""
        clause, params = queries.where(scope, ts="s.ts",
                                       served_model=queries.SHADOW_SERVED_MODEL,
                                       router_version="s.router_version", slice_="s.slice")
        decided = "s.agreement IS NOT NULL AND COALESCE(s.status, 'ok') = 'ok'"
        clause = f"{clause} AND {decided}" if clause else f"WHERE {decided}"
        return self.frame(
            "SELECT s.ts, s.agreement, COALESCE(NULLIF(s.inclusion_prob, 0), 1.0) AS "
            f"inclusion_prob FROM shadow_evals s {clause} ORDER BY s.ts DESC LIMIT ?",
            [*params, int(limit)])

    def disagreements(self, scope: Scope, limit: int | None = None) -> pd.DataFrame:
        """Decided shadow/probe pairs where the student disagreed with the teacher, newest
        first, with their text (NULL where the monitor did not store pairs)."""
        clause, params = queries.where(scope, ts="s.ts",
                                       served_model=queries.SHADOW_SERVED_MODEL,
                                       router_version="s.router_version", slice_="s.slice")
        cond = "s.agreement IS NOT NULL AND s.agreement < 0.5 AND COALESCE(s.status, 'ok') = 'ok'"
        clause = f"{clause} AND {cond}" if clause else f"WHERE {cond}"
        tail = " LIMIT ?" if limit is not None else ""
        return self.frame(
            "SELECT s.id, s.ts, COALESCE(s.kind, 'shadow') AS kind, s.slice, s.method, s.score, "
            "s.router_score, s.router_version, s.prompt_text, s.student_response, "
            f"s.teacher_response FROM shadow_evals s {clause} ORDER BY s.ts DESC, s.id DESC{tail}",
            [*params, *([int(limit)] if limit is not None else [])])

    # --- savings (the store's one definition) ------------------------------------------------

    def savings(self, scope: Scope = Scope()) -> dict[str, float]:
        return queries.savings(self.conn, scope)

    def savings_parts(self, scope: Scope, groups: int) -> list[dict[str, float]]:
        return queries.savings_parts(self.conn, scope, groups)

    # --- small tables ------------------------------------------------------------------------

    def alerts(self) -> pd.DataFrame:
        return self.frame("SELECT id, kind, COALESCE(slice, 'all') AS slice, opened_at, "
                          "resolved_at, statistic, value, bound, n, window, threshold, message, "
                          "resolved_value, resolved_bound FROM alerts ORDER BY opened_at, id")

    def routers(self) -> pd.DataFrame:
        return self.frame("SELECT version, scorer, threshold, calibration_json, teacher, "
                          "student, metrics_json, path, created_at FROM routers "
                          "ORDER BY created_at, version")

    def latest_router(self) -> tuple[str | None, float | None, str | None]:
        """Router version and threshold of the newest request the router decided (forced
        requests carry the version but no threshold), and its time."""
        for condition in ("threshold IS NOT NULL", "1"):
            row = self.conn.execute(
                "SELECT router_version, threshold, ts FROM requests WHERE router_version IS NOT "
                f"NULL AND {condition} ORDER BY ts DESC LIMIT 1").fetchone()
            if row:
                return row
        return None, None, None

    def runs(self, kind: str) -> pd.DataFrame:
        return self.frame("SELECT id, status, started_at, finished_at, config_json FROM runs "
                          "WHERE kind = ? ORDER BY started_at, rowid", [kind])

    def bench_results(self) -> pd.DataFrame:
        return self.frame("SELECT b.id, b.run_id, b.role, b.task, b.metric, b.value, b.stderr, "
                          "b.n FROM bench_results b JOIN runs r ON r.id = b.run_id "
                          "WHERE r.status = 'done' ORDER BY b.id")

    def training_metrics(self) -> pd.DataFrame:
        return self.frame("SELECT run_id, step, split, loss, kd_loss, ce_loss, lr, tokens_per_s "
                          "FROM training_metrics ORDER BY run_id, split, step")
