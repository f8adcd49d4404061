"""Cost, routing and latency figures from the request cubes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kdroute.review.common import Snapshot, bucket_start, percentiles, select
from kdroute.store.queries import NONE, Scope
from kdroute.store.views import SCORE_BINS


def _by_bucket(frame: pd.DataFrame, unit: str, extra: list[str] | None = None) -> pd.DataFrame:
    keys = ["bucket", *(extra or [])]
    out = frame.groupby(keys, as_index=False).sum(numeric_only=True)
    out.insert(0, "time", bucket_start(out, unit))
    return out.sort_values(keys).reset_index(drop=True)


# --- cost ---------------------------------------------------------------------------------

def cost_over_time(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Per bucket: what was paid and what always-teacher would have cost, and both cumulative."""
    t = select(snap.traffic, scope)
    if t.empty:
        return pd.DataFrame(columns=["time", "bucket", "actual_usd", "teacher_equivalent_usd",
                                     "cumulative_actual_usd", "cumulative_teacher_usd",
                                     "requests"])
    out = _by_bucket(t[["bucket", "requests", "cost_usd", "teacher_cost_usd"]], snap.unit)
    out = out.rename(columns={"cost_usd": "actual_usd", "teacher_cost_usd":
                              "teacher_equivalent_usd"})
    out["cumulative_actual_usd"] = out["actual_usd"].cumsum()
    out["cumulative_teacher_usd"] = out["teacher_equivalent_usd"].cumsum()
    return out


def cost_by_model(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    t = select(snap.traffic, scope)
    if t.empty:
        return pd.DataFrame(columns=["time", "bucket", "served_model", "cost_usd", "requests"])
    t = t[t["served_model"] != NONE]  # refused requests cost nothing
    return _by_bucket(t[["bucket", "served_model", "requests", "cost_usd"]], snap.unit,
                      ["served_model"])


def cost_per_1k(snap: Snapshot, scope: Scope, monitor_cost_usd: float) -> pd.DataFrame:
    """Cost per 1,000 requests by served model and for all of them (monitor cost on "all")."""
    t = select(snap.traffic, scope)
    cols = ["served by", "requests", "actual per 1k", "always-teacher per 1k", "saved per 1k"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    g = t.groupby("served_model")[["requests", "cost_usd", "teacher_cost_usd"]].sum()
    g.loc["all requests"] = g.sum()
    g["net"] = g["teacher_cost_usd"] - g["cost_usd"]
    g.loc["all requests", "net"] -= monitor_cost_usd
    per = 1000 / g["requests"].replace(0, np.nan)
    return pd.DataFrame({"served by": g.index, "requests": g["requests"].astype(int).to_numpy(),
                         "actual per 1k": (g["cost_usd"] * per).to_numpy(),
                         "always-teacher per 1k": (g["teacher_cost_usd"] * per).to_numpy(),
                         "saved per 1k": (g["net"] * per).to_numpy()})


# --- routing ------------------------------------------------------------------------------

def teacher_share(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Per bucket: the share of served requests that went to the teacher, and the fallbacks."""
    t = select(snap.traffic, scope)
    if t.empty:
        return pd.DataFrame(columns=["time", "bucket", "requests", "teacher_share", "fallbacks"])
    out = _by_bucket(t[["bucket", "teacher_requests", "student_requests", "fallbacks"]],
                     snap.unit)
    out["requests"] = out["teacher_requests"] + out["student_requests"]
    out = out[out["requests"] > 0]
    out["teacher_share"] = out["teacher_requests"] / out["requests"]
    return out.reset_index(drop=True)


def route_reasons(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    t = select(snap.traffic, scope)
    if t.empty:
        return pd.DataFrame(columns=["time", "bucket", "route_reason", "requests"])
    return _by_bucket(t[["bucket", "route_reason", "requests"]], snap.unit, ["route_reason"])


def score_histogram(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Router scores in scope: bin edges, counts and shares of the version's requests, per
    router version."""
    s = select(snap.scores, scope)
    if s.empty:
        return pd.DataFrame(columns=["router_version", "bin", "low", "high", "requests",
                                     "share"])
    out = s.groupby(["router_version", "bin"], as_index=False)["n"].sum()
    out["low"], out["high"] = out["bin"] / SCORE_BINS, (out["bin"] + 1) / SCORE_BINS
    out["share"] = out["n"] / out.groupby("router_version")["n"].transform("sum")
    return out.rename(columns={"n": "requests"})


def _metrics(row: pd.Series) -> dict:
    try:
        metrics = json.loads(row["metrics_json"] or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    held = metrics.get("holdout") or {}
    return held if held.get("apgr") is not None else (metrics.get("cv") or {})


def _calibration(row: pd.Series) -> dict:
    try:
        return json.loads(row["calibration_json"] or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}


def routers(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Each router version: scorer, threshold, offline APGR/CPT (held-out, else cross-validated),
    its calibrated teacher share, and what it did in scope."""
    t = select(snap.traffic, scope)
    by_version = t.groupby("router_version")[["teacher_requests", "student_requests"]].sum() \
        if not t.empty else pd.DataFrame(columns=["teacher_requests", "student_requests"])
    requests = by_version["teacher_requests"] + by_version["student_requests"]
    teacher = by_version["teacher_requests"]
    rows = []
    for _, r in snap.routers.iterrows():
        m, cal = _metrics(r), _calibration(r)
        n = int(requests.get(r["version"], 0))
        rows.append({"version": r["version"], "scorer": r["scorer"], "threshold": r["threshold"],
                     "APGR": m.get("apgr"), "CPT(50%)": m.get("cpt50"),
                     "CPT(80%)": m.get("cpt80"), "AUC": m.get("auc"),
                     "calibrated teacher share": cal.get("teacher_share"),
                     "requests": n,
                     "teacher share": int(teacher.get(r["version"], 0)) / n if n else None,
                     "created": r["created_at"]})
    return pd.DataFrame(rows, columns=["version", "scorer", "threshold", "APGR", "CPT(50%)",
                                       "CPT(80%)", "AUC", "calibrated teacher share",
                                       "requests", "teacher share", "created"])


# --- latency and errors -------------------------------------------------------------------

def latency_over_time(snap: Snapshot, scope: Scope, metric: str = "latency") -> pd.DataFrame:
    """p50 and p95 (ms) per bucket and served model; metric latency | ttft."""
    h = select(snap.latency, scope)
    h = h[(h["metric"] == metric) & (h["served_model"] != NONE)] if not h.empty else h
    if h.empty:
        return pd.DataFrame(columns=["time", "bucket", "served_model", "n", "p50", "p95"])
    out = percentiles(h, ["bucket", "served_model"])
    out.insert(0, "time", bucket_start(out, snap.unit))
    return out


def latency_summary(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Over the whole scope, per served model: requests measured, p50/p95 latency and TTFT."""
    h = select(snap.latency, scope)
    if h.empty:
        return pd.DataFrame(columns=["served_model", "metric", "n", "p50", "p95"])
    return percentiles(h, ["served_model", "metric"])


def status_codes(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    t = select(snap.traffic, scope)
    if t.empty:
        return pd.DataFrame(columns=["time", "bucket", "status", "requests"])
    t = t.assign(status=t["status"].fillna(0).astype(int).astype(str))
    return _by_bucket(t[["bucket", "status", "requests"]], snap.unit, ["status"])
