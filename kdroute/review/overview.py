"""The overview: requests, who served them, savings with a bootstrap interval, current agreement
against the floor, open alerts, the breaker and the router in use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdroute.monitor.stats import Rate, weighted_rate
from kdroute.review.common import Snapshot, select
from kdroute.store.queries import Scope, savings_totals

BOOTSTRAP_GROUPS = 64  # random parts of the requests resampled by the bootstrap
BOOTSTRAP_ROUNDS = 2000


def savings_interval(parts: list[dict[str, float]], rounds: int = BOOTSTRAP_ROUNDS,
                     seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of the gross and net savings shares.

    `parts` are the savings sums of random parts of the requests (rowid modulo G); each round
    draws G parts with replacement. With G parts of many requests this is the grouped bootstrap;
    with fewer requests than parts most parts are empty and it tends to the Poisson bootstrap of
    single requests. Rounds without teacher-equivalent cost are dropped."""
    nan = (float("nan"), float("nan"))
    if not parts or sum(p["requests"] for p in parts) == 0:
        return {"gross_share": nan, "net_share": nan}
    teacher = np.array([p["teacher_equivalent_usd"] for p in parts])
    gross = teacher - np.array([p["actual_usd"] for p in parts])
    net = gross - np.array([p["monitor_cost_usd"] for p in parts])
    g = len(parts)
    draws = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=rounds)  # (R, G)
    base = draws @ teacher
    ok = base > 0
    if not ok.any():
        return {"gross_share": nan, "net_share": nan}
    tails = [(1 - level) / 2, 1 - (1 - level) / 2]
    out = {}
    for name, values in (("gross_share", gross), ("net_share", net)):
        lo, hi = np.quantile((draws @ values)[ok] / base[ok], tails)
        out[name] = (float(lo), float(hi))
    return out


@dataclass
class Agreement:
    rate: Rate
    floor: float
    state: str  # below (upper bound under the floor) | above (lower bound over it) | unsure | none


def current_agreement(recent: pd.DataFrame, floor: float, confidence: float) -> Agreement:
    """The monitor's figure: the weighted rate of the newest window of decided evaluations."""
    rate = weighted_rate(recent["agreement"].tolist(), recent["inclusion_prob"].tolist(),
                         confidence)
    if rate.n == 0:
        state = "none"
    elif rate.upper < floor:
        state = "below"
    elif rate.lower >= floor:
        state = "above"
    else:
        state = "unsure"
    return Agreement(rate, floor, state)


def open_alerts(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Alerts open now, for the selected slices (whole-stream alerts always count)."""
    alerts = snap.alerts
    if alerts.empty:
        return alerts
    open_ = alerts[alerts["resolved_at"].isna()]
    if scope.slices is not None:
        open_ = open_[open_["slice"].isin([*scope.slices, "all"])]
    return open_


def breaker(open_now: pd.DataFrame) -> list[str]:
    """Slices the quality breaker sends to the teacher (the open quality alerts; "all" = every
    request)."""
    if open_now.empty:
        return []
    return sorted(open_now.loc[open_now["kind"] == "quality", "slice"].unique())


def overview(snap: Snapshot, scope: Scope, parts: list[dict[str, float]],
             recent: pd.DataFrame, floor: float, confidence: float) -> dict:
    """Every number of the overview row, for the rows in `scope`."""
    totals = savings_totals(parts)
    traffic = select(snap.traffic, scope)
    n_student = int(traffic["student_requests"].sum()) if not traffic.empty else 0
    n_served = n_student + (int(traffic["teacher_requests"].sum()) if not traffic.empty else 0)
    now_open = open_alerts(snap, scope)
    version, threshold, seen_at = snap.latest_router
    return {
        **totals, "interval": savings_interval(parts),
        "served": n_served, "student_share": n_student / n_served if n_served else float("nan"),
        "errors": int(traffic.loc[traffic["status"] >= 400, "requests"].sum())
        if not traffic.empty else 0,
        "agreement": current_agreement(recent, floor, confidence),
        "open_alerts": now_open, "breaker": breaker(now_open),
        "router_version": version, "router_threshold": threshold, "router_seen_at": seen_at,
    }
