"""Fit, cross-validate and calibrate routers; read paired results from the ledger.

`train_router` is the recipe behind `kdroute route train`: hold out a calibration split, estimate
the scorer's quality by k-fold cross-validation on the rest, fit it on the rest, pick the threshold
on the held-out split for the configured target, and return an artifact with all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kdroute.errors import ConfigError, InputError
from kdroute.route import metrics
from kdroute.route.artifact import Artifact
from kdroute.route.base import Scorer
from kdroute.route.data import RoutingData, make_labels, positive
from kdroute.route.folds import folds_of, group_folds_of  # noqa: F401 (re-exported)
from kdroute.route.registry import EVAL_ONLY, build_scorer

if TYPE_CHECKING:
    from kdroute.config import Settings
    from kdroute.store import Store

CHARS_PER_TOKEN = 4  # the usual rough estimate for English text


# --- data from the ledger ---------------------------------------------------------------------

LEDGER_GROUPS = ("task", "family", "difficulty")  # bench_samples columns `--group-by` may name


def ledger_data(store: Store, runs: Sequence[str] = (), tasks: Sequence[str] = (),
                group_by: str | None = None) -> RoutingData:
    """Teacher/student bench samples paired on (run, task, doc_id); newest run wins per prompt.
    Groups are the task, or the `group_by` column of the student's sample."""
    if group_by not in (None, *LEDGER_GROUPS):
        raise InputError(f"--group-by {group_by!r}: the ledger's bench samples are grouped by "
                         f"one of {', '.join(LEDGER_GROUPS)}")
    frame = store.table_frame("bench_samples")
    if frame.empty:
        raise InputError("the ledger has no bench samples: run `kdroute bench` or "
                         "`kdroute route import FILE` first")
    if runs:
        frame = frame[frame["run_id"].isin(list(runs))]
    if tasks:
        frame = frame[frame["task"].isin(list(tasks))]
    keys = ["run_id", "task", "doc_id"]
    teacher = frame[frame["role"] == "teacher"]
    student = frame[frame["role"] == "student"]
    pairs = teacher.merge(student, on=keys, suffixes=("_t", "_s"))
    if pairs.empty:
        raise InputError("no prompt has both a teacher and a student result in the ledger "
                         "(selected runs/tasks); bench both models first")
    pairs = pairs.sort_values("id_s").drop_duplicates(["task", "prompt_s"], keep="last")
    responses = {"teacher": pairs["response_t"].fillna("").astype(str).tolist(),
                 "student": pairs["response_s"].fillna("").astype(str).tolist()}
    return RoutingData(pairs["prompt_s"].fillna("").astype(str).tolist(),
                       pairs["score_s"].astype(float).clip(0, 1).to_numpy(),
                       pairs["score_t"].astype(float).clip(0, 1).to_numpy(),
                       (pairs[f"{group_by}_s"] if group_by not in (None, "task")
                        else pairs["task"]).astype(str).tolist(),
                       str(pairs["model_fingerprint_t"].mode().iat[0]),
                       str(pairs["model_fingerprint_s"].mode().iat[0]), responses)


def import_to_ledger(store: Store, data: RoutingData, source: Sequence[str]) -> str:
    """Write recorded results into the ledger as bench samples of one `route-import` run."""
    doc_ids: dict[str, int] = {}
    samples = []
    for i, (prompt, group) in enumerate(zip(data.prompts, data.groups, strict=True)):
        doc_id = doc_ids[group] = doc_ids.get(group, -1) + 1
        for role, model, q in (("teacher", data.teacher, data.q_teacher[i]),
                               ("student", data.student, data.q_student[i])):
            samples.append({"model_fingerprint": model, "role": role, "task": group,
                            "doc_id": doc_id, "prompt": prompt, "score": float(q),
                            "response": data.responses.get(role, [None] * len(data))[i]})
    models = [{"fingerprint": m, "reference": m, "kind": "recorded"}
              for m in dict.fromkeys((data.teacher, data.student))]
    return store.import_recorded({"files": [str(s) for s in source], "teacher": data.teacher,
                                  "student": data.student}, models, samples)


def shadow_data(store: Store, student_model: str | None = None) -> RoutingData | None:
    """The monitor's shadow pairs as routing data, or None if the ledger has none with a prompt.

    A shadow pair is a student-served request the teacher answered again: where the teacher
    disagreed the student's answer is taken as wrong and the teacher's as right ("teacher
    needed"); where they agreed, as equally good. So q_teacher = 1 and q_student = the verdict,
    and every label rule reads them alike (expected_gain: 1 or 0.5; binary rules: 1 or 0).
    Each pair weighs 1 / its inclusion probability (scaled to mean 1, so the pairs count as many
    prompts as they are): the oversampled requests near the threshold do not dominate. Only the
    pairs of one student count: `student_model`, else the newest pair's.
    """
    rows = store.shadow_pairs(student_model)
    if student_model is None and rows:
        newest = rows[-1]["student_model"]
        rows = [r for r in rows if r["student_model"] == newest]
    if not rows:
        return None
    weights = 1.0 / np.clip(np.array([float(r["inclusion_prob"]) for r in rows]), 1e-6, 1.0)
    return RoutingData(
        [str(r["prompt"]) for r in rows], np.array([float(r["verdict"]) for r in rows]),
        np.ones(len(rows)), [str(r["slice"] or "shadow") for r in rows],
        str(rows[-1]["teacher_model"] or "teacher"), str(rows[-1]["student_model"] or "student"),
        {"teacher": [str(r["teacher_response"] or "") for r in rows],
         "student": [str(r["student_response"] or "") for r in rows]},
        weights / weights.mean())


def learning_data(store: Store, runs: Sequence[str] = (), tasks: Sequence[str] = (),
                  student_model: str | None = None) -> tuple[RoutingData, dict[str, Any]]:
    """Bench samples plus shadow pairs (`route train --from-ledger`), and what was used."""
    try:
        bench = ledger_data(store, runs, tasks)
    except InputError:
        bench = None
    shadow = shadow_data(store, student_model)
    if bench is None and shadow is None:
        raise InputError("the ledger has no bench samples and no shadow pairs with a prompt: run "
                         "`kdroute bench`, or serve with monitor.store_pairs = true and let the "
                         "monitor shadow some traffic")
    parts = [p for p in (shadow, bench) if p is not None]  # the shadow pairs name the student
    data = RoutingData.concat(parts)
    sources = {"bench": 0 if bench is None else len(bench),
               "shadow": 0 if shadow is None else len(shadow),
               "shadow_teacher_needed": 0 if shadow is None else int((shadow.q_student < 0.5).sum()),
               "student": data.student, "teacher": data.teacher}
    return data, sources


# --- costs ------------------------------------------------------------------------------------

def request_costs(data: RoutingData, settings: Settings, output_tokens: int = 256
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) estimated USD cost of each prompt on the student and on the teacher.

    Tokens are estimated as characters / 4; output tokens come from the recorded responses when
    the data has them, else `output_tokens`. Prices come from the [teacher]/[student] config.
    """
    tokens_in = np.array([math.ceil(len(p) / CHARS_PER_TOKEN) for p in data.prompts], float)
    out = []
    for role, cfg in (("student", settings.student), ("teacher", settings.teacher)):
        if cfg.input_price_per_1m is None or cfg.output_price_per_1m is None:
            raise ConfigError(f"{role}.input_price_per_1m / output_price_per_1m must be set to "
                              f"compute costs")
        texts = data.responses.get(role)
        tokens_out = (np.array([math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts], float)
                      if texts else np.full(len(data), float(output_tokens)))
        out.append((tokens_in * cfg.input_price_per_1m + tokens_out * cfg.output_price_per_1m)
                   / 1e6)
    return out[0], out[1]


# --- calibration ------------------------------------------------------------------------------

def calibration_costs(data: RoutingData, settings: Settings, output_tokens: int = 256
                      ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Per-prompt (student, teacher) costs when prices are configured, else zeros; the
    cost_budget target needs them (request_costs names the missing price)."""
    priced = all(m.input_price_per_1m is not None for m in (settings.teacher, settings.student))
    if priced or settings.router.calibration_target == "cost_budget":
        return request_costs(data, settings, output_tokens)
    return 0.0, 0.0


def calibrate(scores: Sequence[float], q_student: Sequence[float], q_teacher: Sequence[float],
              target: str, value: float, cost_student: Sequence[float] | float = 0.0,
              cost_teacher: Sequence[float] | float = 0.0) -> dict[str, Any]:
    """Pick the threshold meeting `target` on these (held-out) scores; report all three measures.

    teacher_share: the share of calls sent to the teacher closest to `value`;
    quality_floor: the fewest teacher calls keeping mean quality >= value * the teacher's;
    cost_budget: the most teacher calls keeping the cost <= value USD per 1,000 requests.
    Only thresholds between distinct scores are possible, so ties move together.
    """
    s = np.asarray(scores, float)
    qs, qt = np.asarray(q_student, float), np.asarray(q_teacher, float)
    n = len(s)
    if n == 0:
        raise InputError("no held-out data to calibrate on")
    cs = np.broadcast_to(np.asarray(cost_student, float), (n,))
    ct = np.broadcast_to(np.asarray(cost_teacher, float), (n,))
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    quality = (qs.sum() + np.r_[0, np.cumsum((qt - qs)[order])]) / n  # (N+1,)
    cost_1k = (cs.sum() + np.r_[0, np.cumsum((ct - cs)[order])]) / n * 1000  # (N+1,)
    k_ok = np.r_[True, ss[1:] < ss[:-1], True]  # k teacher calls realizable by a threshold
    ks = np.flatnonzero(k_ok)
    r_t = qt.mean()
    if target == "teacher_share":
        k = int(ks[np.argmin(np.abs(ks - value * n))])
    elif target == "quality_floor":
        good = ks[quality[ks] >= value * r_t - 1e-12]
        k = int(good[0]) if len(good) else n
    elif target == "cost_budget":
        fit = ks[cost_1k[ks] <= value + 1e-12]
        k = int(fit[-1]) if len(fit) else 0
    else:
        raise ConfigError(f"router.calibration_target: unknown target {target!r}")
    if k == 0:
        threshold = float(min(1.0, np.nextafter(ss[0], np.inf)))
    elif k == n:
        threshold = 0.0
    else:
        threshold = float((ss[k - 1] + ss[k]) / 2)
    gap = r_t - qs.mean()
    return {"target": target, "value": value, "threshold": threshold, "n": n,
            "teacher_calls": k, "teacher_share": k / n,
            "quality": float(quality[k]), "quality_vs_teacher": float(quality[k] / r_t) if r_t
            else float("nan"), "pgr": float((quality[k] - qs.mean()) / gap) if gap else float("nan"),
            "cost_per_1k": float(cost_1k[k]), "teacher_cost_per_1k": float(cost_1k[-1])}


# --- cross-validation and training ------------------------------------------------------------

def cross_val_scores(make: Callable[[], Scorer], data: RoutingData, labels: np.ndarray,
                     folds: int = 5, seed: int = 0, progress: Callable[[int], None] | None = None,
                     fold: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores (N,) and the fold of each item (N,) (`fold` given: those folds)."""
    if folds < 2 or len(data) < folds:
        raise InputError(f"cross-validation needs at least {max(folds, 2)} prompts and 2 folds")
    fold = folds_of(len(data), folds, seed) if fold is None else np.asarray(fold)
    out = np.zeros(len(data))
    for f in np.unique(fold):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        sub = data.subset(tr)
        scorer = make().fit(sub.prompts, labels[tr], sub.groups, sub.weights)
        out[te] = scorer.score_texts([data.prompts[i] for i in te])
        if progress:
            progress(f + 1)
    return out, fold


def fold_metrics(scores: np.ndarray, fold: np.ndarray, data: RoutingData,
                 cost_student: float | np.ndarray = 0.0, cost_teacher: float | np.ndarray = 1.0
                 ) -> dict[str, float]:
    """Mean over folds of each metric (each fold's curve drawn from that fold's model alone);
    per-prompt cost arrays (N,) add the cost-axis metrics."""
    cs, ct = np.broadcast_to(cost_student, scores.shape), np.broadcast_to(cost_teacher, scores.shape)
    per = []
    for f in np.unique(fold):
        idx = np.flatnonzero(fold == f)
        try:
            per.append(metrics.evaluate(scores[idx], data.q_student[idx], data.q_teacher[idx],
                                        cost_student=cs[idx], cost_teacher=ct[idx]))
        except ValueError:
            continue
    if not per:
        raise InputError("teacher and student score the same on every fold: nothing to route")
    return {k: float(np.nanmean([p[k] for p in per])) for k in per[0]}


def train_router(data: RoutingData, scorer: str, settings: Settings, folds: int = 5,
                 holdout: float = 0.2, seed: int = 0, output_tokens: int = 256,
                 progress: Callable[[str], None] | None = None,
                 sources: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None) -> Artifact:
    """Cross-validate, fit and calibrate `scorer` (built with `params`, its hyperparameters) on
    `data`; the artifact carries its metrics."""
    if scorer in EVAL_ONLY:
        raise InputError(f"{scorer!r} is an evaluation baseline, not a router; pick a real scorer")
    cfg = settings.router
    labels = make_labels(data.q_student, data.q_teacher, cfg.label_rule, cfg.label_delta)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    n_hold = int(round(holdout * len(data)))
    if n_hold < 1 or len(data) - n_hold < folds:
        raise InputError(f"too little data ({len(data)} prompts) for {folds}-fold CV and a "
                         f"{holdout:.0%} calibration split")
    hold, fit_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    train, cal = data.subset(fit_idx), data.subset(hold)
    say = progress or (lambda _msg: None)
    cv_metrics: dict[str, float] = {}
    def make():
        return build_scorer(scorer, **(params or {}))

    if make().needs_training:
        say(f"cross-validating {scorer} ({folds} folds, {len(train)} prompts)")
        oof, fold = cross_val_scores(make, train, labels[fit_idx], folds, seed)
        cv_metrics = fold_metrics(oof, fold, train)
    say(f"fitting {scorer} on {len(train)} prompts")
    model = make().fit(train.prompts, labels[fit_idx], train.groups, train.weights)
    say(f"calibrating on {len(cal)} held-out prompts")
    cal_scores = model.score_texts(cal.prompts)
    costs = calibration_costs(cal, settings, output_tokens)
    calibration = calibrate(cal_scores, cal.q_student, cal.q_teacher, cfg.calibration_target,
                            cfg.calibration_value, *costs)
    try:
        held = metrics.evaluate(cal_scores, cal.q_student, cal.q_teacher, labels[hold])
    except ValueError:
        held = {}
    return Artifact(model, calibration["threshold"], calibration=calibration,
                    teacher=data.teacher, student=data.student, label_rule=cfg.label_rule,
                    metrics={"cv": cv_metrics, "holdout": held, "n_train": len(train),
                             "n_holdout": len(cal), "label_rate": float(positive(labels).mean()),
                             "folds": folds, "seed": seed, "sources": sources or {},
                             "params": params or {}})
