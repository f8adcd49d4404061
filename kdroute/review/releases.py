"""Release benchmarks (bench runs: teacher vs student and the routed system per task, retention,
the gate, speed) and training curves of distill runs."""

from __future__ import annotations

import json

import pandas as pd

from kdroute.review.common import Snapshot

SPEED_TASK = "speed"  # kdroute.bench.run.SPEED_TASK (not imported: that module pulls lm_eval)
SPEED_METRICS = {"tokens_per_s": "tokens/s", "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms",
                 "params": "parameters", "peak_memory_mib": "peak MiB"}


def _config(text: str | None) -> dict:
    try:
        return json.loads(text or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}


def bench_runs(snap: Snapshot) -> pd.DataFrame:
    """Finished bench runs, newest first: id, start, gate line and verdict, models compared."""
    runs = snap.bench_runs
    cols = ["run", "started", "gate", "passed", "models"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    runs = runs[runs["status"] == "done"]
    rows = []
    for r in runs.itertuples():
        cfg = _config(r.config_json)
        gate = cfg.get("gate") or ""
        models = cfg.get("models") or {}
        rows.append({"run": r.id, "started": r.started_at, "gate": gate or "(no gate recorded)",
                     "passed": gate.startswith("PASS") if gate else None,
                     "models": ", ".join(f"{role}: {m.get('reference', '?')}"
                                         for role, m in models.items())})
    return pd.DataFrame(rows, columns=cols).iloc[::-1].reset_index(drop=True)


def bench_scores(snap: Snapshot, run_id: str) -> pd.DataFrame:
    """Per task of one run: the primary metric (the task's first recorded metric) of each role,
    and each compared role's retention (score / teacher's score)."""
    res = snap.bench_results
    res = res[(res["run_id"] == run_id) & (res["task"] != SPEED_TASK)] if not res.empty else res
    if res.empty:
        return pd.DataFrame(columns=["task", "metric", "role", "value", "stderr", "retention"])
    primary = res.sort_values("id").groupby("task")["metric"].first()
    res = res[res["metric"] == res["task"].map(primary)]
    teacher = res[res["role"] == "teacher"].set_index("task")["value"]
    retention = res["value"] / res["task"].map(teacher)
    out = res.assign(retention=retention.where(res["task"].map(teacher) > 0))
    return out[["task", "metric", "role", "value", "stderr", "retention"]].reset_index(drop=True)


def speed(snap: Snapshot, run_id: str) -> pd.DataFrame:
    """The speed test of one run: one row per role, one column per figure."""
    res = snap.bench_results
    res = res[(res["run_id"] == run_id) & (res["task"] == SPEED_TASK)] if not res.empty else res
    if res.empty:
        return pd.DataFrame(columns=["role", *SPEED_METRICS.values()])
    table = res.pivot_table(index="role", columns="metric", values="value", aggfunc="first")
    table = table[[m for m in SPEED_METRICS if m in table]].rename(columns=SPEED_METRICS)
    return table.reset_index()


def distill_runs(snap: Snapshot) -> pd.DataFrame:
    runs = snap.distill_runs
    cols = ["run", "started", "status", "name", "steps logged"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    logged = snap.training.groupby("run_id")["step"].max() if not snap.training.empty else {}
    rows = [{"run": r.id, "started": r.started_at, "status": r.status,
             "name": _config(r.config_json).get("name") or _config(r.config_json).get("loss", ""),
             "steps logged": int(logged.get(r.id, 0)) if len(logged) else 0}
            for r in runs.itertuples()]
    return pd.DataFrame(rows, columns=cols).iloc[::-1].reset_index(drop=True)


def training_curves(snap: Snapshot, run_ids: list[str]) -> pd.DataFrame:
    """Loss curves of the chosen runs, long form: run, split, step, series (total, KD, CE),
    value."""
    t = snap.training
    t = t[t["run_id"].isin(run_ids)] if not t.empty else t
    if t.empty:
        return pd.DataFrame(columns=["run_id", "split", "step", "series", "value"])
    long = t.melt(id_vars=["run_id", "split", "step"], value_vars=["loss", "kd_loss", "ce_loss"],
                  var_name="series", value_name="value").dropna(subset=["value"])
    long["series"] = long["series"].map({"loss": "total", "kd_loss": "KD", "ce_loss": "CE"})
    return long.reset_index(drop=True)
