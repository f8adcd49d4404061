"""What the demo prints, computed from the ledger it wrote: who answered each replayed request,
quality against the gold answers, teacher share by family and level, savings, agreement and
alerts. Reads only; every figure is reproducible from the ledger's rows (tests/test_demo.py does
so) plus the replay's prompts and the baselines' answers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from kdroute.demo.traffic import Prompt, Reply
from kdroute.errors import StoreError
from kdroute.monitor.stats import weighted_rate


@dataclass(frozen=True)
class Phase:
    first: int  # index of the phase's first request in the replay
    label: str
    student: str  # the student model served in this phase (hf:<dir>)


def accuracy(replies: list[Reply]) -> float:
    return sum(r.correct for r in replies) / len(replies) if replies else float("nan")


def outcome(store, prompts: list[Prompt], replies: list[Reply], baselines: dict[str, list[Reply]],
            since: str, until: str, *, phases: list[Phase], confidence: float = 0.95) -> dict:
    """The demo's figures for the routed `replies` sent in [since, until)."""
    rows = _request_rows(store, since, replies)
    by_index = {p.index: p for p in prompts}
    n = len(replies)
    routed = {"routed": accuracy(replies),
              **{f"always_{role}": accuracy(baselines[role]) for role in ("teacher", "student")}}
    teacher = [rows[r.request_id]["served_role"] == "teacher" for r in replies]
    savings = store.savings(since=since, until=until)
    shadows = _evaluations(store, since, until, {r.request_id for r in replies})
    agreement = _rate([s for s in shadows if s["kind"] == "shadow"], confidence)
    order = sorted(replies, key=lambda r: (rows[r.request_id]["ts"], r.index))
    alerts = [dict(a, opened_at_request=_request_at(order, rows, a["opened_at"]),
                   resolved_at_request=_request_at(order, rows, a["resolved_at"]))
              for a in sorted(store.alerts(limit=1000), key=lambda a: a["id"])
              if a["opened_at"] >= since]
    return {
        "requests": n,
        "logged": all(rows[r.request_id]["status"] == 200 for r in replies),
        "answered_by": _answered_by(replies, rows),
        "accuracy": routed,
        "quality_retained": (routed["routed"] / routed["always_teacher"]
                             if routed["always_teacher"] else float("nan")),
        "teacher_share": sum(teacher) / n,
        "teacher_share_by_level": _by_level(replies, rows, by_index),
        "savings": savings,
        "agreement": agreement,
        "evaluations": dict(Counter(s["kind"] for s in shadows)),
        "alerts": alerts,
        "open_alerts": len(store.open_alerts()),
        "phases": [_phase(p, nxt, replies, rows, shadows, confidence)
                   for p, nxt in zip(phases, [*[q.first for q in phases[1:]], n], strict=True)],
    }


def _request_rows(store, since: str, replies: list[Reply]) -> dict[str, dict]:
    """The ledger's row of every reply (served role, route reason, cost, text), by request id."""
    frame = store.requests_frame(since=since)
    wanted = {r.request_id for r in replies}
    rows = {row["id"]: row for row in frame.to_dict("records") if row["id"] in wanted}
    missing = wanted - rows.keys()
    if missing:
        raise StoreError(f"{len(missing)} replayed requests are not in the ledger "
                         f"(e.g. {sorted(missing)[0]}); was the gateway stopped gracefully?")
    return rows


def _evaluations(store, since: str, until: str, request_ids: set[str]) -> list[dict]:
    """Scored shadow and probe rows of the replayed requests, written in [since, until)."""
    frame = store.table_frame("shadow_evals")
    return [row for row in frame.to_dict("records")
            if row["request_id"] in request_ids and since <= row["ts"] < until
            and row["status"] == "ok" and _present(row["verdict"])]


def _present(value) -> bool:
    return value is not None and value == value  # pandas reads NULL as None or NaN


def _rate(rows: list[dict], confidence: float) -> dict:
    rate = weighted_rate([float(r["verdict"]) for r in rows],
                         [float(r["inclusion_prob"]) if _present(r["inclusion_prob"]) else 1.0
                          for r in rows], confidence)
    return {"value": rate.value, "lower": rate.lower, "upper": rate.upper, "n": rate.n,
            "n_eff": rate.n_eff, "confidence": confidence}


def _answered_by(replies: list[Reply], rows: dict[str, dict]) -> list[dict]:
    counts = Counter((rows[r.request_id]["served_role"], rows[r.request_id]["route_reason"])
                     for r in replies)
    correct = Counter((rows[r.request_id]["served_role"], rows[r.request_id]["route_reason"])
                      for r in replies if r.correct)
    return [{"role": role, "reason": reason, "requests": k, "accuracy": correct[role, reason] / k}
            for (role, reason), k in sorted(counts.items())]


def _by_level(replies, rows, by_index) -> dict[str, dict[int, dict]]:
    cells: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in replies:
        p = by_index[r.index]
        cells[p.family][p.difficulty].append(rows[r.request_id]["served_role"] == "teacher")
    return {family: {level: {"requests": len(v), "teacher_share": sum(v) / len(v)}
                     for level, v in sorted(levels.items())}
            for family, levels in sorted(cells.items())}


def _request_at(order: list[Reply], rows: dict[str, dict], ts: str | None) -> int | None:
    """How many replayed requests the ledger had logged before `ts` (None: `ts` is None)."""
    if ts is None:
        return None
    return sum(1 for r in order if rows[r.request_id]["ts"] < ts)


def _phase(phase: Phase, end: int, replies, rows, shadows, confidence) -> dict:
    mine = [r for r in replies if phase.first <= r.index < end]
    ids = {r.request_id for r in mine}
    reasons = Counter((rows[r.request_id]["served_role"], rows[r.request_id]["route_reason"])
                      for r in mine)
    return {"label": phase.label, "student": phase.student, "first": phase.first, "end": end,
            "requests": len(mine), "accuracy": accuracy(mine),
            "student_served": sum(k for (role, _), k in reasons.items() if role == "student"),
            "teacher_by_router": reasons["teacher", "router"],
            "teacher_by_breaker": reasons["teacher", "breaker"],
            "student_agreement": _rate([s for s in shadows if s["request_id"] in ids],
                                       confidence)}

