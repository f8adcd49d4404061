"""Router quality metrics on the exact curve (RouteLLM's definitions). Pure numpy functions.

Send the k highest-scored of N queries to the teacher, k = 0..N. The routed quality is
r(k) = (sum of teacher quality over the top k + student quality over the rest) / N, at teacher-call
fraction c = k/N. With r_S, r_T the all-student and all-teacher qualities:

    PGR(c) = (r(c) - r_S) / (r_T - r_S)          APGR = trapezoid integral of PGR over c in [0, 1]
    CPT(x) = smallest c with PGR(c) >= x          (first crossing, linear interpolation)

Tied scores are ranked in expectation: inside a group of equal scores every item contributes the
group's mean gain, which is the average over all orders of the tie. So a constant score gives the
straight line of a random router exactly (APGR = 0.5, CPT(x) = x).

Cost axis: with per-query costs of the teacher and student (scalars or arrays), the same curve is
drawn against f(k) = (cost(k) - cost_all_student) / (cost_all_teacher - cost_all_student) in [0, 1];
with equal per-query costs f equals c.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CPT_LEVELS = (0.5, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class Curve:
    """The exact routing curve: every array has N+1 points (k = 0..N teacher calls)."""

    calls: np.ndarray  # (N+1,) teacher-call fraction c = k/N
    quality: np.ndarray  # (N+1,) mean routed quality r(c)
    pgr: np.ndarray  # (N+1,) performance gap recovered
    cost: np.ndarray  # (N+1,) cost fraction between all-student (0) and all-teacher (1)
    cost_vs_teacher: np.ndarray  # (N+1,) routed cost / all-teacher cost
    r_student: float
    r_teacher: float


def _tie_mean(sorted_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace each value by the mean over its run of equal (sorted) scores."""
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sums = np.add.reduceat(values, starts)
    sizes = np.diff(np.r_[starts, len(values)])
    return np.repeat(sums / sizes, sizes)


def routing_curve(scores: Sequence[float], q_student: Sequence[float], q_teacher: Sequence[float],
                  cost_student: float | Sequence[float] = 0.0,
                  cost_teacher: float | Sequence[float] = 1.0) -> Curve:
    """The exact curve of a router's scores (N,) against per-query qualities (N,) in [0, 1].

    Raises ValueError when N = 0 or the teacher and student have equal mean quality (PGR undefined).
    """
    s = np.asarray(scores, dtype=np.float64)
    qs = np.asarray(q_student, dtype=np.float64)
    qt = np.asarray(q_teacher, dtype=np.float64)
    n = len(s)
    if n == 0 or qs.shape != (n,) or qt.shape != (n,):
        raise ValueError("scores, q_student and q_teacher must be non-empty and of equal length")
    r_s, r_t = float(qs.mean()), float(qt.mean())
    if np.isclose(r_t, r_s):
        raise ValueError("teacher and student have the same mean quality: PGR is undefined")
    cs = np.broadcast_to(np.asarray(cost_student, dtype=np.float64), (n,))
    ct = np.broadcast_to(np.asarray(cost_teacher, dtype=np.float64), (n,))
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    gain = _tie_mean(s_sorted, (qt - qs)[order])  # (N,) quality gained by each teacher call
    extra = _tie_mean(s_sorted, (ct - cs)[order])  # (N,) cost added by each teacher call
    quality = (qs.sum() + np.r_[0.0, np.cumsum(gain)]) / n
    spent = cs.sum() + np.r_[0.0, np.cumsum(extra)]
    span = ct.sum() - cs.sum()
    cost = (spent - cs.sum()) / span if span > 0 else np.linspace(0.0, 1.0, n + 1)
    total_t = ct.sum()
    return Curve(calls=np.arange(n + 1) / n, quality=quality, pgr=(quality - r_s) / (r_t - r_s),
                 cost=cost, cost_vs_teacher=spent / total_t if total_t > 0 else cost,
                 r_student=r_s, r_teacher=r_t)


def apgr(curve: Curve, axis: str = "calls") -> float:
    """Area under PGR over [0, 1] of the call (or cost) axis, by the trapezoid rule."""
    return float(np.trapezoid(curve.pgr, getattr(curve, axis)))


def apgr_10pt(curve: Curve) -> float:
    """RouteLLM's coarse variant: the mean PGR at 10 evenly spaced call fractions 0, 1/9, ..., 1."""
    grid = np.linspace(0.0, 1.0, 10)
    return float(np.mean(np.interp(grid, curve.calls, curve.pgr)))


def cpt(curve: Curve, level: float, axis: str = "calls") -> float:
    """Smallest call (or cost) fraction where PGR first reaches `level`, linearly interpolated.

    Returns NaN when the curve never reaches it (impossible for level <= 1 on the call axis).
    """
    x, y = getattr(curve, axis), curve.pgr
    hit = np.flatnonzero(y >= level - 1e-12)
    if len(hit) == 0:
        return float("nan")
    k = int(hit[0])
    if k == 0:
        return float(x[0])
    frac = (level - y[k - 1]) / (y[k] - y[k - 1])
    return float(x[k - 1] + frac * (x[k] - x[k - 1]))


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC of scores for binary labels (Mann-Whitney, ties count half). NaN if one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    ranks = _tie_mean_ranks(s, ranks)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _tie_mean_ranks(s: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="stable")
    out = np.empty_like(ranks)
    out[order] = _tie_mean(s[order], ranks[order])
    return out


def oracle_scores(q_student: Sequence[float], q_teacher: Sequence[float]) -> np.ndarray:
    """The oracle's scores: the teacher's gain on each query (needs the answers; eval only)."""
    return np.asarray(q_teacher, dtype=np.float64) - np.asarray(q_student, dtype=np.float64)


def summary(curve: Curve, cost_axis: bool = False) -> dict[str, float]:
    """APGR, RouteLLM's 10-point APGR and CPT at CPT_LEVELS (plus cost-axis variants)."""
    out = {"apgr": apgr(curve), "apgr_10pt": apgr_10pt(curve)}
    out |= {f"cpt{round(x * 100)}": cpt(curve, x) for x in CPT_LEVELS}
    if cost_axis:
        out["apgr_cost"] = apgr(curve, "cost")
        out |= {f"cpt{round(x * 100)}_cost": cpt(curve, x, "cost") for x in CPT_LEVELS}
    return out


def bootstrap(metric: Callable[[np.ndarray], float], n: int, rounds: int = 1000,
              seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of `metric(indices)` over `rounds` resamples of N items with replacement.

    Resamples where the metric is undefined (ValueError or NaN, e.g. equal teacher and student
    quality) are dropped.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        try:
            v = metric(idx)
        except ValueError:
            continue
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def evaluate(scores: Sequence[float], q_student: Sequence[float], q_teacher: Sequence[float],
             labels: Sequence[int] | None = None, cost_student: float | Sequence[float] = 0.0,
             cost_teacher: float | Sequence[float] = 1.0, rounds: int = 0,
             seed: int = 0) -> dict[str, float]:
    """Every metric of one scorer; `rounds` > 0 adds bootstrap 95 % intervals of APGR and CPT(50%)."""
    s = np.asarray(scores, dtype=np.float64)
    qs, qt = np.asarray(q_student, float), np.asarray(q_teacher, float)
    cs = np.broadcast_to(np.asarray(cost_student, float), s.shape)
    ct = np.broadcast_to(np.asarray(cost_teacher, float), s.shape)
    curve = routing_curve(s, qs, qt, cs, ct)
    cost_axis = bool(np.any(cs > 0))
    out = summary(curve, cost_axis)
    if labels is None:
        labels = (qt > qs).astype(int)
    out["auc"] = auc(s, np.asarray(labels, float) > 0.5)  # soft labels: above the 0.5 tie
    if rounds > 0:
        for name, fn in (("apgr", apgr), ("cpt50", lambda c: cpt(c, 0.5))):
            lo, hi = bootstrap(
                lambda i, fn=fn: fn(routing_curve(s[i], qs[i], qt[i], cs[i], ct[i])),
                len(s), rounds, seed)
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    return out
