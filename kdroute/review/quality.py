"""Quality and drift: agreement over time and per slice (the monitor's weighted rates), alerts,
input drift (router-score PSI against the router's calibration), and the disagreements that are
the next distillation set."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import numpy as np
import pandas as pd

from kdroute.monitor.stats import psi, rate_from_sums
from kdroute.review.common import Snapshot, bucket_start, later, select
from kdroute.store.queries import NONE, Scope
from kdroute.store.views import SCORE_BINS

SUMS = ["decided", "sum_w", "sum_wy", "sum_w2"]


def _rates(groups: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Weighted agreement and its Wilson interval of each row of summed shadow cells."""
    rates = [rate_from_sums(int(r.decided), r.sum_w, r.sum_wy, r.sum_w2, confidence)
             for r in groups[SUMS].fillna(0).itertuples()]
    return groups.assign(agreement=[r.value for r in rates], lower=[r.lower for r in rates],
                         upper=[r.upper for r in rates], n_eff=[r.n_eff for r in rates])


def agreement_over_time(snap: Snapshot, scope: Scope, confidence: float,
                        window: int = 200) -> pd.DataFrame:
    """Agreement per bucket over a trailing window of buckets holding about `window` decided
    evaluations (the monitor's rolling window; one bucket when buckets are that full), with the
    Wilson interval of each point."""
    s = select(snap.shadow, scope)
    cols = ["time", "bucket", "decided", "agreement", "lower", "upper", "buckets"]
    if s.empty or s["decided"].sum() == 0:
        return pd.DataFrame(columns=cols)
    g = s.groupby("bucket")[[*SUMS, "disagreements"]].sum().sort_index()
    g = g[g["decided"] > 0]
    span = max(1, int(np.ceil(window / g["decided"].mean())))
    rolled = g.rolling(span, min_periods=1).sum().reset_index()
    rolled = _rates(rolled, confidence).assign(buckets=span)
    rolled.insert(0, "time", bucket_start(rolled, snap.unit))
    return rolled[cols]


UNSLICED = "(no family)"


def slices(snap: Snapshot, scope: Scope, confidence: float, floor: float,
           slice_floors: dict[str, float] | None = None) -> pd.DataFrame:
    """Per slice (and all of them, "all"; evaluations the classifier gave no family are
    "(no family)"): evaluations, agreement with its interval, disagreements,
    failed evaluations, its state against the floor and whether an alert is open on it."""
    s = select(snap.shadow, scope)
    cols = ["slice", "evaluations", "agreement", "lower", "upper", "floor", "disagreements",
            "failed", "state", "open alerts"]
    if s.empty:
        return pd.DataFrame(columns=cols)
    g = s.groupby("slice", as_index=False)[[*SUMS, "disagreements", "failed", "rows"]].sum()
    # evaluations of no family carry the stream's name: keep "all" for the total alone
    g["slice"] = g["slice"].replace({"all": UNSLICED})
    total = g.sum(numeric_only=True).to_frame().T.assign(slice="all")
    g = _rates(pd.concat([g, total], ignore_index=True), confidence)
    alerts = snap.alerts
    open_ = alerts[alerts["resolved_at"].isna()] if not alerts.empty else alerts
    g["open alerts"] = [", ".join(sorted(open_.loc[open_["slice"] == name, "kind"]))
                        if not open_.empty else "" for name in g["slice"]]
    floors = g["slice"].map(lambda name: (slice_floors or {}).get(name, floor))  # as the monitor
    g["state"] = np.select([g["decided"] == 0, g["upper"] < floors, g["lower"] >= floors],
                           ["no data", "below floor", "above floor"], "unsure")
    g["floor"] = floors
    g = g.rename(columns={"decided": "evaluations"})
    g["evaluations"] = g["evaluations"].astype(int)
    return g[cols]


def alert_timeline(snap: Snapshot, scope: Scope) -> pd.DataFrame:
    """Alerts overlapping the time range (for the selected slices and the whole stream), with
    an end for drawing: when they resolved, else the last data point (still open)."""
    a = snap.alerts
    if a.empty:
        return a.assign(start=pd.Series(dtype="datetime64[ns, UTC]"), end=None, state=None)
    last = max(v for v in snap.span if v) if any(snap.span) else a["opened_at"].max()
    keep = np.ones(len(a), dtype=bool)
    if scope.until is not None:
        keep &= (a["opened_at"] < scope.until).to_numpy()
    if scope.since is not None:
        keep &= (a["resolved_at"].isna() | (a["resolved_at"] >= scope.since)).to_numpy()
    if scope.slices is not None:
        keep &= a["slice"].isin([*scope.slices, "all"]).to_numpy()
    a = a[keep]
    end = a["resolved_at"].fillna(max(last, a["opened_at"].max()) if len(a) else last)
    return a.assign(start=pd.to_datetime(a["opened_at"], utc=True, format="ISO8601"),
                    end=pd.to_datetime(end, utc=True, format="ISO8601"),
                    state=np.where(a["resolved_at"].isna(), "open", "resolved"))


# --- input drift ----------------------------------------------------------------------------

def _calibrated_histogram(calibration_json: str | None) -> list[float] | None:
    """The router's calibration score histogram when its artifact recorded one in
    `calibration.score_histogram` = {"edges": [21 values 0..1], "counts": [20 values]}."""
    try:
        hist = json.loads(calibration_json or "{}").get("score_histogram") or {}
    except (TypeError, json.JSONDecodeError):
        return None
    counts = hist.get("counts")
    return [float(c) for c in counts] if counts and len(counts) == SCORE_BINS else None


def _bins(frame: pd.DataFrame) -> np.ndarray:
    counts = np.zeros(SCORE_BINS)
    for b, n in frame.groupby("bin")["n"].sum().items():
        counts[int(min(max(b, 0), SCORE_BINS - 1))] += n
    return counts


def input_drift(snap: Snapshot, scope: Scope) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per router version in scope: PSI of its router-score distribution against its reference,
    and the teacher share against the calibrated one. The reference is the calibration split's
    histogram when the router recorded it, else the version's first day of traffic in the ledger.
    Returns (summary table, long frame of bin shares now vs reference for the chart)."""
    now = select(snap.scores, scope)
    summary, bins = [], []
    routers = snap.routers.set_index("version") if not snap.routers.empty else None
    for version, group in now.groupby("router_version") if not now.empty else []:
        cal = routers.loc[version, "calibration_json"] if routers is not None \
            and version in routers.index else None
        reference = _calibrated_histogram(cal)
        source = "calibration split"
        if reference is None:
            own = snap.scores[snap.scores["router_version"] == version]
            first = own["bucket"].min()
            day = own[own["bucket"] < later(first, snap.unit, timedelta(days=1))]
            reference, source = _bins(day).tolist(), "first day of this version"
        actual = _bins(group)
        index = psi(reference, actual) if sum(reference) and actual.sum() else float("nan")
        summary.append({"router_version": version, "requests": int(actual.sum()),
                        "reference": source, "PSI": index,
                        "drift": "major" if index > 0.25 else "moderate" if index > 0.1
                        else "stable"})
        ref = np.asarray(reference) / max(sum(reference), 1)
        for k in range(SCORE_BINS):
            bins += [{"router_version": version, "low": k / SCORE_BINS, "share": actual[k] /
                      actual.sum(), "distribution": "now"},
                     {"router_version": version, "low": k / SCORE_BINS, "share": ref[k],
                      "distribution": "reference"}]
    return (pd.DataFrame(summary, columns=["router_version", "requests", "reference", "PSI",
                                           "drift"]),
            pd.DataFrame(bins, columns=["router_version", "low", "share", "distribution"]))


# --- disagreements --------------------------------------------------------------------------

_TURN = re.compile(r"^(user|assistant|system|tool): ", re.MULTILINE)


def prompt_of(text: str | None) -> str | None:
    """The user's words of a stored prompt: the request log stores conversations as
    "role: content" lines; a single user turn becomes its content (what `kdroute distill`
    wraps in its own template), longer conversations stay whole."""
    if text is None:
        return None
    turns = _TURN.findall(text)
    if len(turns) == 1 and text.startswith("user: "):
        return text[len("user: "):]
    return text


def distill_jsonl(pairs: pd.DataFrame) -> tuple[str, int]:
    """Disagreements as prompt/response JSONL (`kdroute distill --data`): the prompt and the
    teacher's answer, with the slice's family (for `--train-examples` balancing) and where each
    row came from. Rows without stored text are left out; returns (text, rows written)."""
    lines = []
    for row in pairs.itertuples():
        prompt = prompt_of(row.prompt_text)
        if not prompt or not isinstance(row.teacher_response, str) or not row.teacher_response:
            continue
        record = {"prompt": prompt, "response": row.teacher_response}
        if isinstance(row.slice, str) and row.slice.startswith("family:"):
            record["family"] = row.slice[len("family:"):]
        record |= {"student_response": row.student_response, "method": row.method,
                   "score": None if pd.isna(row.score) else float(row.score),
                   "slice": row.slice if row.slice != NONE else None,
                   "shadow_id": int(row.id), "ts": row.ts}
        lines.append(json.dumps(record, ensure_ascii=False))
    return "".join(line + "\n" for line in lines), len(lines)
