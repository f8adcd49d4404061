"""What `kdroute monitor status | agree | replay` compute, as plain data (the CLI prints it; the
dashboard and the demo can read the same dicts)."""

from __future__ import annotations

from pathlib import Path

from kdroute.errors import InputError
from kdroute.monitor.agreement import AgreementScorer, calibrate_threshold, cosines
from kdroute.monitor.detect import Detector, DetectorSettings, Observation
from kdroute.monitor.replay import confusion, read_pairs, read_stream, replay
from kdroute.monitor.shadow import utc_midnight
from kdroute.monitor.slices import slices_of

CATCH_UP_WINDOWS = 10


def offline_scorer(settings) -> AgreementScorer:
    cfg = settings.monitor
    return AgreementScorer([t for t in cfg.tiers if t != "judge"], cfg.embedding_threshold,
                           cfg.judge_band)


def monitor_status(store, settings, since: str | None = None) -> dict:
    cfg = settings.monitor
    detector = Detector(DetectorSettings.from_config(cfg))
    for row in store.latest_evaluations(CATCH_UP_WINDOWS * cfg.window):
        detector.add(Observation(float(row["verdict"]), row["inclusion_prob"] or 1.0,
                                 slices_of(row["slice"], row["router_score"], cfg.score_buckets)))
    open_alerts = store.open_alerts()
    quality_open = {a["slice"] for a in open_alerts if a["kind"] == "quality"}
    agreement = []
    for name, rate in sorted(detector.rates().items(), key=lambda kv: (kv[0] != "all", kv[0])):
        floor = detector.settings.floor_of(name)
        state = ("alert" if name in quality_open else
                 "warming up" if rate.n < cfg.min_samples else
                 "below floor" if rate.upper < floor else
                 "ok" if rate.lower > floor else "near floor")
        agreement.append({"slice": name, "n": rate.n, "n_eff": rate.n_eff, "value": rate.value,
                          "lower": rate.lower, "upper": rate.upper, "state": state})
    counts = store.shadow_counts()
    return {
        "config": {"floor": cfg.agreement_floor, "slice_floors": dict(cfg.slice_floors),
                   "window": cfg.window,
                   "min_samples": cfg.min_samples, "confidence": cfg.confidence,
                   "breaker": cfg.breaker, "budget_usd": cfg.shadow_budget_usd,
                   "shadow_rate": cfg.shadow_rate},
        "agreement": agreement,
        "open_alerts": open_alerts,
        "recent_alerts": store.alerts(limit=10),
        "breaker_open": sorted(quality_open) if cfg.breaker else [],
        "evaluations": {
            "shadow_ok": sum(c["n"] for c in counts if c["kind"] == "shadow"
                             and c["status"] == "ok"),
            "probe_ok": sum(c["n"] for c in counts if c["kind"] == "probe" and c["status"] == "ok"),
            "failed": sum(c["n"] for c in counts if c["status"] != "ok"),
            "by_method": counts},
        "spent_today_usd": store.monitor_spend(utc_midnight()),
        "savings": store.savings(since=since),
    }


def agree_file(settings, file: Path, output: Path, prompt_column: str, student_column: str,
               teacher_column: str, student_correct: str | None, teacher_correct: str | None,
               calibrate: bool = False) -> dict:
    """Score every pair of `file`, write `output` (the input columns plus method, score,
    verdict), and with correctness columns measure the scorer against them."""
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise InputError(f"{output}: write .csv or .jsonl")
    rows, _, pairs = read_pairs(file, prompt_column, student_column, teacher_column)
    scorer = offline_scorer(settings)
    verdicts = scorer.score_offline(pairs)
    out_rows = [dict(r, method=v.method, score=v.score, verdict=v.verdict)
                for r, v in zip(rows, verdicts, strict=True)]
    _write_rows(output, out_rows)
    methods: dict[str, int] = {}
    for v in verdicts:
        methods[v.method] = methods.get(v.method, 0) + 1
    decided = [v.verdict for v in verdicts if v.verdict is not None]
    result = {"pairs": len(pairs), "methods": methods,
              "agreement": sum(decided) / len(decided) if decided else float("nan")}
    if student_correct or teacher_correct:
        s_ok = _correct_column(rows, student_correct, file, "--student-correct")
        t_ok = _correct_column(rows, teacher_correct, file, "--teacher-correct")
        result["truth"] = confusion(verdicts, s_ok, t_ok)
        if calibrate:
            cos = cosines(pairs)
            result["calibrated_threshold"] = calibrate_threshold(
                cos, [s >= t for s, t in zip(s_ok, t_ok, strict=True)])
    return result


def _correct_column(rows: list[dict], column: str | None, file: Path, flag: str) -> list[bool]:
    if column is None:
        raise InputError(f"give both --student-correct and --teacher-correct ({flag} is missing)")
    if rows and column not in rows[0]:
        raise InputError(f"{file}: no column {column!r} ({flag})")
    out = []
    for i, row in enumerate(rows, 2):
        text = str(row.get(column)).strip().lower()
        if text not in ("true", "false", "1", "0", "1.0", "0.0"):
            raise InputError(f"{file}: row {i}: {column} must be True/False (got {text!r})")
        out.append(text in ("true", "1", "1.0"))
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=str) + "\n")
        return
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def replay_file(settings, file: Path, *, floor=None, window=None, min_samples=None,
                verdict_column: str = "verdict", student_answer=None, teacher_answer=None,
                student=None, teacher=None, slice_column=None) -> dict:
    cfg = settings.monitor
    detector_settings = DetectorSettings.from_config(cfg, floor=floor, window=window,
                                                     min_samples=min_samples)
    stream = read_stream(file, offline_scorer(settings), cfg.score_buckets,
                         verdict_column=verdict_column, student_answer=student_answer,
                         teacher_answer=teacher_answer, student=student, teacher=teacher,
                         slice_column=slice_column)
    events = replay(stream, detector_settings)
    n = len(stream.observations)
    agreed = sum(o.verdict for o in stream.observations)
    return {"file": str(file), "source": stream.source, "samples": n, "skipped": stream.skipped,
            "agreement": agreed / n if n else float("nan"),
            "settings": {"floor": detector_settings.floor, "window": detector_settings.window,
                         "min_samples": detector_settings.min_samples},
            "events": [{"sample": i + 1, "action": a.action, "kind": a.kind, "slice": a.slice,
                        "value": a.value, "bound": a.bound, "n": a.n, "message": a.message}
                       for i, a in events]}
