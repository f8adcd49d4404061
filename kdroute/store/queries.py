"""Read queries shared by the read-write `Store` and the read-only `LedgerView`, so the CLI, the
monitor and the dashboard compute savings from one definition. Plain `sqlite3` connections (or
anything with `.execute`), no sqlite-utils, so a `mode=ro` connection can run them.

A `Scope` is the dashboard's filter: a time range [since, until) on the rows' timestamps, and
optional sets of served models, router versions and slices. NULL columns are matched by `NONE`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NONE = "(none)"  # how a NULL served model, router version or slice is named in filters


@dataclass(frozen=True)
class Scope:
    """Which rows a figure is about. None = no restriction; a tuple = one of these values."""

    since: str | None = None  # ISO timestamp or prefix ("2026-01-01", "2026-01-01T13")
    until: str | None = None  # exclusive
    served_models: tuple[str, ...] | None = None
    router_versions: tuple[str, ...] | None = None
    slices: tuple[str, ...] | None = None


def _one_of(column: str, values: Iterable[str]) -> tuple[str, list[str]]:
    values = list(values)
    named = [v for v in values if v != NONE]
    parts = []
    if named:
        parts.append(f"{column} IN ({', '.join('?' * len(named))})")
    if NONE in values:
        parts.append(f"{column} IS NULL")
    return ("(" + " OR ".join(parts) + ")") if parts else "0", named


def where(scope: Scope, ts: str = "ts", served_model: str | None = "served_model",
          router_version: str = "router_version", slice_: str = "slice"
          ) -> tuple[str, list[Any]]:
    """A WHERE clause ("" when nothing is restricted) and its parameters. Pass a column
    expression (or None to skip that restriction) for tables that name things differently."""
    clauses: list[str] = []
    params: list[Any] = []
    if scope.since is not None:
        clauses.append(f"{ts} >= ?")
        params.append(scope.since)
    if scope.until is not None:
        clauses.append(f"{ts} < ?")
        params.append(scope.until)
    for column, values in ((served_model, scope.served_models),
                           (router_version, scope.router_versions), (slice_, scope.slices)):
        if column is not None and values is not None:
            clause, named = _one_of(column, values)
            clauses.append(clause)
            params.extend(named)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


# A shadow row's served model is its request's (a shadow pair is a student-served request, a
# probe a teacher-served one); when the request row is missing, the model the kind implies.
SHADOW_SERVED_MODEL = ("COALESCE((SELECT r.served_model FROM requests r WHERE r.id = s.request_id),"
                       " CASE s.kind WHEN 'probe' THEN s.teacher_model ELSE s.student_model END)")


def savings_parts(conn, scope: Scope = Scope(), groups: int = 1) -> list[dict[str, float]]:
    """The sums savings are made of, split into `groups` random parts (rowid modulo `groups`) so
    the parts can be resampled for a bootstrap interval; groups=1 gives the totals.

    Each part: requests, actual_usd (what was paid), teacher_equivalent_usd (what always-teacher
    would have paid), monitor_cost_usd (shadow teacher answers, breaker probes and the agreement
    judge's calls)."""
    req_where, req_params = where(scope)
    shadow_where, shadow_params = where(scope, ts="s.ts", served_model=SHADOW_SERVED_MODEL,
                                        router_version="s.router_version", slice_="s.slice")
    parts = {g: {"requests": 0, "actual_usd": 0.0, "teacher_equivalent_usd": 0.0,
                 "monitor_cost_usd": 0.0} for g in range(groups)}
    for g, n, actual, teacher in conn.execute(
            f"SELECT rowid % {int(groups)}, COUNT(*), COALESCE(SUM(cost_usd), 0), "
            f"COALESCE(SUM(teacher_cost_usd), 0) FROM requests {req_where} GROUP BY 1",
            req_params).fetchall():
        parts[g].update(requests=n, actual_usd=actual, teacher_equivalent_usd=teacher)
    for g, cost in conn.execute(
            f"SELECT s.rowid % {int(groups)}, COALESCE(SUM(COALESCE(s.teacher_cost_usd, 0)"
            f" + COALESCE(s.student_cost_usd, 0) + COALESCE(s.judge_cost_usd, 0)), 0)"
            f" FROM shadow_evals s {shadow_where} "
            "GROUP BY 1", shadow_params).fetchall():
        parts[g]["monitor_cost_usd"] = cost
    return [parts[g] for g in range(groups)]


def savings_totals(parts: Iterable[dict[str, float]]) -> dict[str, float]:
    """What routing saved against "always teacher": `gross` = teacher-equivalent minus actual
    cost of the requests; `monitor_cost` = what the shadow teacher answers, the breaker's
    background student probes and the agreement judge cost; `net` = gross minus monitor cost. Shares are of the
    teacher-equivalent cost (0 when there is none)."""
    parts = list(parts)
    n = sum(p["requests"] for p in parts)
    actual = sum(p["actual_usd"] for p in parts)
    teacher = sum(p["teacher_equivalent_usd"] for p in parts)
    monitor_cost = sum(p["monitor_cost_usd"] for p in parts)
    gross = teacher - actual
    net = gross - monitor_cost
    return {"requests": n, "actual_usd": actual, "teacher_equivalent_usd": teacher,
            "gross_usd": gross, "monitor_cost_usd": monitor_cost, "net_usd": net,
            "gross_share": gross / teacher if teacher else 0.0,
            "net_share": net / teacher if teacher else 0.0}


def savings(conn, scope: Scope = Scope()) -> dict[str, float]:
    """Gross, monitor-cost and net savings of the rows in `scope` (see `savings_totals`)."""
    return savings_totals(savings_parts(conn, scope))
