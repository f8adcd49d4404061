"""A deterministic synthetic ledger: what a week (or month) of routed traffic with the monitor on
looks like, written through `Store` like the real stages write it.

Tests, the dashboard benchmark and the README screenshot use it. Requests (both roles, two router
versions, overrides, fallbacks, errors, latencies, slices), shadow and probe pairs with inclusion
probabilities and text, quality/decay/input-drift alerts opened and resolved, the routers' offline
metrics and calibration, bench runs and distill runs. Every request, shadow and alert row is a
pure function of the spec (seed included); run ids carry the wall clock like real runs.

The story, as fractions of the span: router v2 replaces v1 at 0.40; a burst of hard arithmetic
traffic (0.42-0.47) moves the router-score distribution (an input-drift alert); the student's
arithmetic agreement drops at 0.60 (decay and quality alerts, the breaker sends arithmetic to the
teacher with background probes) and recovers at 0.80; counting degrades from 0.88 and its alerts
are still open at the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from kdroute.store.ledger import Store

TEACHER, STUDENT = "openai/gpt-4o", "hosted_vllm/kdroute-student"
PRICES = {"teacher": (5.0, 15.0), "student": (0.1, 0.3)}  # USD per 1M input / output tokens
SLICES = ("arith", "reverse", "sort", "count", "lookup", "mc")
SLICE_SHARE = np.array([0.18, 0.16, 0.16, 0.14, 0.18, 0.18])
SCORE_BETA = {"arith": (4.0, 3.0), "reverse": (2.0, 4.0), "sort": (1.5, 5.0),
              "count": (4.0, 2.5), "lookup": (2.0, 3.0), "mc": (2.5, 3.0)}
BASE_AGREEMENT = {"arith": 0.93, "reverse": 0.95, "sort": 0.98, "count": 0.92,
                  "lookup": 0.96, "mc": 0.95}
VERSIONS = (("tfidf-v1", "tfidf", 0.55), ("ensemble-v2", "ensemble", 0.50))
V2_AT = 0.40
MIX_BURST = (0.42, 0.47)
DRIFTS = {"arith": (0.60, 0.80, 0.70), "count": (0.88, 1.01, 0.72)}  # start, end, factor
ALERTS = (  # kind, slice, opened, resolved (None = still open), statistic, value, bound, limit
    ("input_drift", "all", 0.43, 0.48, "router_score_psi", 0.31, 0.31, 0.25),
    ("decay", "family:arith", 0.61, 0.79, "page_hinkley", 61.0, 50.0, 50.0),
    ("quality", "family:arith", 0.63, 0.81, "agreement_upper_bound", 0.71, 0.78, 0.80),
    ("decay", "family:count", 0.89, None, "page_hinkley", 57.0, 50.0, 50.0),
    ("quality", "family:count", 0.91, None, "agreement_upper_bound", 0.69, 0.77, 0.80),
)
ERRORS = ((400, None, "messages: field required"), (401, None, "invalid API key"),
          (429, "teacher", "upstream rate limit"), (502, "teacher", "upstream error"),
          (504, "teacher", "upstream timeout"))


@dataclass(frozen=True)
class Synthetic:
    """What to generate. 1,000,000 requests take about a minute on a 2-core machine."""

    requests: int = 20_000
    days: float = 7.0
    seed: int = 0
    start: str = "2026-01-05T00:00:00+00:00"
    text: bool = True  # store prompt and both answers on shadow rows (monitor.store_pairs)


def write_synthetic(target: str | Path | Store, spec: Synthetic = Synthetic()) -> dict[str, int]:
    """Fill a ledger (a path or an open Store) with `spec`'s traffic; returns row counts."""
    store = target if isinstance(target, Store) else Store(target)
    try:
        rng = np.random.default_rng(spec.seed)
        cols = _requests(rng, spec)
        for lo in range(0, spec.requests, 50_000):
            store.insert_requests(_rows(cols, lo, min(lo + 50_000, spec.requests)))
        shadows = _shadows(rng, spec, cols)
        store.insert_shadows(shadows)
        for row in _alerts(spec):
            store.open_alert(row)
        _models_and_routers(store, spec)
        _bench_runs(store)
        _distill_runs(store)
        return {"requests": spec.requests, "shadow_evals": len(shadows), "alerts": len(ALERTS)}
    finally:
        if not isinstance(target, Store):
            store.close()


def _at(spec: Synthetic, fraction: float) -> str:
    when = datetime.fromisoformat(spec.start) + timedelta(days=spec.days * fraction)
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _in(t: np.ndarray, lo: float, hi: float | None) -> np.ndarray:
    return (t >= lo) & (t < (hi if hi is not None else 2.0))


def _requests(rng: np.random.Generator, spec: Synthetic) -> dict[str, np.ndarray]:
    """Column arrays of every request, in time order."""
    n = spec.requests
    period = 1.0 / spec.days  # one day as a fraction of the span
    u = np.sort(rng.random(n))
    # a monotone warp gives a daily cycle (4x busier at the peak than at night)
    t = np.clip(u - 0.6 * period / (2 * np.pi) * np.sin(2 * np.pi * u / period), 0, 1 - 1e-9)
    share = np.tile(SLICE_SHARE, (n, 1))
    share[_in(t, *MIX_BURST), 0] *= 4.0  # the burst of hard arithmetic traffic
    share /= share.sum(axis=1, keepdims=True)
    slice_ix = (rng.random((n, 1)) > np.cumsum(share, axis=1)).sum(axis=1)
    a = np.array([SCORE_BETA[s][0] for s in SLICES])[slice_ix]
    b = np.array([SCORE_BETA[s][1] for s in SLICES])[slice_ix]
    score = rng.beta(a, b)
    version = (t >= V2_AT).astype(int)
    threshold = np.array([v[2] for v in VERSIONS])[version]
    role = np.where(score >= threshold, "teacher", "student").astype(object)
    reason = np.full(n, "router", dtype=object)
    override = rng.random(n) < 0.03
    role[override] = np.where(rng.random(override.sum()) < 0.5, "teacher", "student")
    reason[override] = "override"
    for kind, slice_name, opened, resolved, *_ in ALERTS:
        if kind == "quality":  # the breaker: the slice goes to the teacher while it is open
            held = _in(t, opened, resolved) & (slice_ix == SLICES.index(slice_name[7:])) \
                & ~override
            role[held], reason[held] = "teacher", "breaker"
    fallback = (role == "student") & (reason == "router") & (rng.random(n) < 0.01)
    role[fallback], reason[fallback] = "teacher", "fallback"
    cols = {"t": t, "slice_ix": slice_ix, "score": score, "version": version,
            "threshold": threshold, "role": role, "reason": reason, "fallback": fallback}
    cols.update(_costs_and_latency(rng, n, role, fallback, slice_ix))
    cols["ts"] = _stamps(spec, t)
    return cols


def _costs_and_latency(rng, n, role, fallback, slice_ix) -> dict[str, np.ndarray]:
    prompt = (rng.lognormal(np.log(60), 0.7, n) + 5).astype(int)
    completion = (rng.lognormal(np.log(30 + 8 * slice_ix), 0.8, n) + 1).astype(int)
    status = np.full(n, 200)
    error_ix = np.where(rng.random(n) < 0.006, rng.integers(0, len(ERRORS), n), -1)
    for i, (code, _, _) in enumerate(ERRORS):
        status[error_ix == i] = code
    ok = status == 200
    teacher_in, teacher_out = PRICES["teacher"]
    student_in, student_out = PRICES["student"]
    teacher_cost = np.where(ok, (prompt * teacher_in + completion * teacher_out) / 1e6, 0.0)
    student_cost = np.where(ok, (prompt * student_in + completion * student_out) / 1e6, 0.0)
    cost = np.where(role == "teacher", teacher_cost, student_cost)
    is_teacher = role == "teacher"
    latency = np.where(is_teacher, rng.lognormal(np.log(1100), 0.45, n),
                       rng.lognormal(np.log(180), 0.4, n)) * (0.6 + completion / 100)
    latency = latency + np.where(fallback, rng.lognormal(np.log(2000), 0.3, n), 0.0)
    stream = rng.random(n) < 0.35
    ttft = np.where(stream & ok, latency * rng.uniform(0.15, 0.35, n), np.nan)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "status": status,
            "error_ix": error_ix, "cost": cost, "teacher_cost": teacher_cost,
            "student_cost": student_cost, "latency": latency, "ttft": ttft, "stream": stream}


def _stamps(spec: Synthetic, t: np.ndarray) -> np.ndarray:
    start = np.datetime64(datetime.fromisoformat(spec.start).astimezone(UTC).replace(tzinfo=None),
                          "ms")
    offsets = (t * spec.days * 86_400_000).astype("timedelta64[ms]")
    return np.char.add(np.datetime_as_string(start + offsets, unit="ms"), "+00:00")


def _rows(cols: dict[str, np.ndarray], lo: int, hi: int):
    """Request rows lo..hi-1 as dicts (what the gateway's writer inserts)."""
    keys = ("k3f9a1c2e4b6d", "k7c2e4d9a1b3f", "k0b5d8e2c6a9f")
    for i in range(lo, hi):
        role = cols["role"][i]
        err = ERRORS[cols["error_ix"][i]] if cols["error_ix"][i] >= 0 else None
        rejected = err is not None and err[1] is None  # refused before routing
        served = None if rejected else (err[1] if err else role)
        yield {
            "id": f"syn{i:08d}", "ts": cols["ts"][i],
            "endpoint": "chat" if i % 13 else "completions",
            "requested_model": f"kdroute/{role}" if cols["reason"][i] == "override"
            else "kdroute/auto",
            "served_model": {"teacher": TEACHER, "student": STUDENT}.get(served),
            "served_role": served, "route_reason": "error" if err else cols["reason"][i],
            "router_score": None if rejected else float(cols["score"][i]),
            "threshold": None if rejected else float(cols["threshold"][i]),
            "router_version": None if rejected else VERSIONS[cols["version"][i]][0],
            "latency_ms": 1.5 if rejected else float(cols["latency"][i]),
            "ttft_ms": None if np.isnan(cols["ttft"][i]) else float(cols["ttft"][i]),
            "prompt_tokens": None if rejected else int(cols["prompt_tokens"][i]),
            "completion_tokens": 0 if err else int(cols["completion_tokens"][i]),
            "cost_usd": float(cols["cost"][i]), "teacher_cost_usd": float(cols["teacher_cost"][i]),
            "status": int(cols["status"][i]), "error": err[2] if err else None,
            "fallback": int(cols["fallback"][i]), "stream": int(cols["stream"][i]),
            "key_id": keys[i % 3], "prompt_text": None, "response_text": None,
            "slice": f"family:{SLICES[cols['slice_ix'][i]]}",
        }


def _agreement_prob(cols, idx: np.ndarray) -> np.ndarray:
    """P(student agrees with teacher) of requests idx: harder prompts (higher score) agree less;
    a slice's drift window multiplies it down."""
    t, s = cols["t"][idx], cols["slice_ix"][idx]
    p = np.array([BASE_AGREEMENT[x] for x in SLICES])[s] - 0.12 * cols["score"][idx]
    for name, (lo, hi, factor) in DRIFTS.items():
        p = np.where(_in(t, lo, hi) & (s == SLICES.index(name)), p * factor, p)
    return np.clip(p, 0.0, 1.0)


def _shadows(rng: np.random.Generator, spec: Synthetic, cols) -> list[dict]:
    """Shadow pairs of student-served requests (4 % far from the threshold, 25 % near it) and
    probes of breaker-held requests (20 %), with verdicts, methods, costs and text."""
    ok = cols["status"] == 200
    near = np.abs(cols["score"] - cols["threshold"]) < 0.08
    shadow_pi = np.where(near, 0.25, 0.04)
    is_shadow = ok & (cols["role"] == "student") & (cols["reason"] == "router")
    is_probe = ok & (cols["reason"] == "breaker")
    pi = np.where(is_shadow, shadow_pi, np.where(is_probe, 0.2, 0.0))
    idx = np.flatnonzero(rng.random(len(pi)) < pi)
    agree = rng.random(len(idx)) < _agreement_prob(cols, idx)
    fate = rng.random(len(idx))  # < 1 %: the shadow call failed; < 3 %: undecided
    texts = random.Random(spec.seed)
    rows = []
    for j, i in enumerate(idx):
        name = SLICES[cols["slice_ix"][i]]
        probe = bool(is_probe[i])
        failed, undecided = fate[j] < 0.01, 0.01 <= fate[j] < 0.03
        method, score = _verdict_method(name, bool(agree[j]), undecided, texts)
        prompt, teacher, student = _pair_text(name, bool(agree[j]), texts)
        verdict = None if failed or undecided else int(agree[j])
        rows.append({
            "request_id": f"syn{i:08d}", "ts": _at(spec, cols["t"][i] + 2e-6 / spec.days),
            "kind": "probe" if probe else "shadow", "status": "failed" if failed else "ok",
            "error": "teacher timeout after 60 s" if failed else None,
            "teacher_model": TEACHER, "student_model": STUDENT,
            "prompt_text": prompt if spec.text else None,
            "teacher_response": None if failed or not spec.text else teacher,
            "student_response": student if spec.text else None,
            "agreement": None if verdict is None else float(verdict), "verdict": verdict,
            "method": None if failed else method, "score": None if failed else score,
            "inclusion_prob": float(pi[i]), "router_score": float(cols["score"][i]),
            "threshold": float(cols["threshold"][i]),
            "router_version": VERSIONS[cols["version"][i]][0], "slice": f"family:{name}",
            "teacher_cost_usd": None if probe else float(cols["teacher_cost"][i]),
            "student_cost_usd": float(cols["student_cost"][i]) if probe else None,
            "latency_ms": float(cols["latency"][i]) * (0.3 if probe else 4.0),
        })
    return rows


def _verdict_method(name: str, agree: bool, undecided: bool, rnd: random.Random):
    if name in ("lookup", "reverse"):  # free text: cosine of the two answers' embeddings
        if undecided:
            return "llm_judge", round(rnd.uniform(0.4, 0.6), 3)
        return "embedding", round(rnd.uniform(0.86, 0.99) if agree else rnd.uniform(0.3, 0.8), 3)
    return "answer_match", 1.0 if agree else 0.0


CAPITALS = ("Zorbania", "Quelmar", "Vantis", "Ostrelle", "Drumhallow", "Peskaro", "Ilvane")


def _pair_text(name: str, agree: bool, rnd: random.Random) -> tuple[str, str, str]:
    """(prompt, teacher's answer, student's answer) in the skill suite's style."""
    if name == "arith":
        x, y = rnd.randint(10, 999), rnd.randint(10, 999)
        right = str(x + y)
        return f"What is {x} + {y}?", right, right if agree else str(x + y + rnd.choice((-10, -1, 1, 9)))
    if name == "reverse":
        word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(4, 9)))
        right = word[::-1]
        wrong = right[1] + right[0] + right[2:]
        return f"Reverse the letters of '{word}'.", right, right if agree else wrong
    if name == "sort":
        nums = rnd.sample(range(1, 100), 5)
        right = ", ".join(map(str, sorted(nums)))
        wrong = ", ".join(map(str, sorted(nums)[:3] + sorted(nums)[3:][::-1]))
        return f"Sort ascending: {', '.join(map(str, nums))}", right, right if agree else wrong
    if name == "count":
        word = "".join(rnd.choice("abrst") for _ in range(rnd.randint(6, 12)))
        right = str(word.count("r"))
        return f"How many times does 'r' appear in '{word}'?", right, \
            right if agree else str(word.count("r") + 1)
    if name == "lookup":
        land = rnd.choice(CAPITALS)
        city = land[::-1].capitalize()
        return f"What is the capital of {land}?", f"The capital of {land} is {city}.", \
            f"The capital of {land} is {city}." if agree else f"{rnd.choice(CAPITALS)} City."
    options = sorted(rnd.sample(range(2, 60), 4))
    rnd.shuffle(options)
    right = "ABCD"[options.index(max(options))]
    listed = " ".join(f"{letter}) {v}" for letter, v in zip("ABCD", options, strict=True))
    return f"Which is largest? {listed}", right, right if agree else rnd.choice(
        [c for c in "ABCD" if c != right])


def _alerts(spec: Synthetic) -> list[dict]:
    rows = []
    for kind, slice_name, opened, resolved, statistic, value, bound, limit in ALERTS:
        row = {"kind": kind, "slice": slice_name, "opened_at": _at(spec, opened),
               "resolved_at": None if resolved is None else _at(spec, resolved),
               "statistic": statistic, "value": value, "bound": bound, "n": 200, "window": 200,
               "threshold": limit, "message": f"{kind} alert on {slice_name}: {statistic} "
               f"{value:g} vs {limit:g}",
               "resolved_value": None if resolved is None else round(value * 1.25, 3),
               "resolved_bound": None if resolved is None else round(bound * 1.15, 3)}
        rows.append(row)
    return rows


def _score_histogram(version: int, draws: int = 4000) -> dict:
    """The calibration split's router-score histogram (20 equal bins): the input-drift
    reference."""
    rng = np.random.default_rng(100 + version)
    s = (rng.random((draws, 1)) > np.cumsum(SLICE_SHARE)).sum(axis=1)
    scores = rng.beta([SCORE_BETA[SLICES[i]][0] for i in s], [SCORE_BETA[SLICES[i]][1] for i in s])
    counts, edges = np.histogram(scores, bins=20, range=(0.0, 1.0))
    return {"edges": [round(e, 2) for e in edges.tolist()], "counts": counts.tolist()}


def _models_and_routers(store: Store, spec: Synthetic) -> None:
    for role, ref, params in (("teacher", TEACHER, None), ("student", STUDENT, 73_872)):
        store.upsert_model(f"fp-{role}", ref, "litellm", params=params,
                           input_price_per_1m=PRICES[role][0], output_price_per_1m=PRICES[role][1])
    for i, (version, scorer, threshold) in enumerate(VERSIONS):
        apgr = (0.642, 0.670)[i]
        metrics = {"apgr": apgr, "apgr_10pt": apgr - 0.01, "cpt50": (0.31, 0.29)[i],
                   "cpt80": (0.60, 0.57)[i], "cpt90": (0.74, 0.70)[i], "auc": (0.71, 0.74)[i]}
        store.save_router({
            "version": version, "scorer": scorer, "threshold": threshold,
            "calibration_json": {"target": "teacher_share", "value": 0.35, "threshold": threshold,
                                 "n": 400, "teacher_share": (0.36, 0.41)[i],
                                 "quality_vs_teacher": (0.96, 0.97)[i],
                                 "score_histogram": _score_histogram(i)},
            "teacher": "fp-teacher", "student": "fp-student",
            "metrics_json": {"cv": metrics, "holdout": {k: v - 0.01 for k, v in metrics.items()},
                             "n_train": 1440, "n_holdout": 360},
            "path": f"routers/{version}.json",
            "created_at": _at(spec, (-0.05, V2_AT - 0.02)[i])})


TASKS = ("kdroute_arith", "kdroute_reverse", "kdroute_sort", "kdroute_count", "kdroute_lookup",
         "kdroute_mc")
BENCH = {  # task: teacher, student v1, student v2, routed system
    "kdroute_arith": (0.62, 0.41, 0.48, 0.60), "kdroute_reverse": (0.81, 0.74, 0.78, 0.80),
    "kdroute_sort": (0.97, 0.95, 0.96, 0.97), "kdroute_count": (0.55, 0.44, 0.51, 0.54),
    "kdroute_lookup": (0.90, 0.86, 0.88, 0.90), "kdroute_mc": (0.72, 0.66, 0.69, 0.71)}


def _bench_runs(store: Store) -> None:
    for k, (name, roles) in enumerate((("student-v1", ("teacher", "student")),
                                        ("student-v2", ("teacher", "student", "system")))):
        run = store.start_run("bench", {"tasks": list(TASKS)})
        results = []
        for role in roles:
            column = {"teacher": 0, "student": 1 + k, "system": 3}[role]
            for task in TASKS:
                value = BENCH[task][column]
                metrics = ("acc,none", "acc_norm,none") if task == "kdroute_mc" \
                    else ("exact_match,extract",)
                results += [{"model_fingerprint": f"fp-{role}", "role": role, "task": task,
                             "task_version": "1.0", "metric": m, "value": value,
                             "stderr": (value * (1 - value) / 300) ** 0.5, "n": 300,
                             "lm_eval_version": "0.4.13", "num_fewshot": 0} for m in metrics]
            speed = {"teacher": (410.0, 58.0, 91.0), "student": (2900.0, 8.1, 12.4),
                     "system": (1300.0, 21.0, 80.0)}[role]
            results += [{"model_fingerprint": f"fp-{role}", "role": role, "task": "speed",
                         "task_version": "1", "metric": m, "value": v, "n": 16}
                        for m, v in zip(("tokens_per_s", "latency_p50_ms", "latency_p95_ms"),
                                        speed, strict=True)]
        gate = ("FAIL: below retention 0.9 (each): kdroute_arith, kdroute_count; mean retention "
                "0.865") if k == 0 else ("FAIL: below retention 0.9 (each): kdroute_arith; mean "
                                         "retention 0.910")
        summary = {"tasks": list(TASKS), "gate": gate, "models": {
            role: {"reference": {"teacher": TEACHER, "system": "kdroute/auto"}.get(role, name)}
            for role in roles}}
        store.record_bench(run, [], results, [], output_dir=None, summary=summary)


def _distill_runs(store: Store) -> None:
    rng = np.random.default_rng(7)
    for name, kd in (("student-v2 (forward KL, T=2)", True), ("student-v2 CE baseline", False)):
        run = store.start_run("distill", {"name": name, "loss": "forward_kl" if kd else "ce",
                                          "steps": 3000, "kd_temperature": 2.0})
        rows = []
        for step in range(10, 3001, 10):
            ce = 0.55 + 2.2 * np.exp(-step / 450) + rng.normal(0, 0.03)
            kd_loss = 0.25 + 1.4 * np.exp(-step / 380) + rng.normal(0, 0.02) if kd else None
            lr = 1e-3 * min(1.0, step / 100) * 0.5 * (1 + np.cos(np.pi * step / 3000))
            rows.append({"step": step, "split": "train", "ce_loss": float(ce),
                         "kd_loss": None if kd_loss is None else float(kd_loss),
                         "loss": float(0.5 * ce + 0.5 * kd_loss) if kd else float(ce),
                         "lr": float(lr), "tokens_per_s": float(49_000 + rng.normal(0, 800))})
            if step % 250 == 0:
                v_ce = 0.62 + 2.0 * np.exp(-step / 500) + (0.0 if kd else 0.06)
                rows.append({"step": step, "split": "validation", "ce_loss": float(v_ce),
                             "kd_loss": float(0.3 + 1.2 * np.exp(-step / 420)) if kd else None,
                             "loss": float(v_ce), "lr": None, "tokens_per_s": None})
        store.log_training_metrics(run, rows)
        store.finish_run(run)
