"""Does the monitor's agreement measure the right thing? Its tiered scorer on real answer pairs.

`../shared/data/routellm/gsm8k_responses.csv`: 857 GSM8K problems, each with the worked solutions
of GPT-4 (the teacher) and Mixtral (the student) and whether each was graded correct. The scorer
is run exactly as the monitor runs it (config.toml's `agreement_method` and
`embedding_threshold`; no judge: it would be a paid model). Figures:

- the confusion matrix of "agree" against "both correct";
- precision of "agree => the student is as right as the teacher" (student score >= teacher score),
  and recall: the share of both-correct pairs the scorer calls agreeing;
- the gap between the measured agreement rate and the true rate of the student matching a correct
  teacher (both correct), over 2,000 random windows of 200 pairs: mean absolute gap, 95th pct.

Targets: precision >= 0.95, recall >= 0.90, mean absolute window gap <= 3 points.

The embedding threshold is calibrated with `calibrate_threshold` (lowest cosine at which agreeing
pairs are right >= 95 % of the time) on all pairs' cosines; a 2-fold check calibrates on one half
and scores the other, so the shipped value is not judged on the pairs it was fit to. Baselines in
the same run: the embedding tier alone (the previous default) and whole-response exact match (the
previous `exact`). Cosines are cached under /tmp (encoding 1,714 answers takes ~80 s on one core).

Run: `python benchmarks/bench_monitor_agreement.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS, SHARED_DATA, claim, write_result  # noqa: E402
from kdroute.monitor.agreement import (  # noqa: E402
    AgreementScorer,
    Pair,
    Verdict,
    answer_tier,
    calibrate_threshold,
    cosines,
)
from kdroute.monitor.answers import extract_answer  # noqa: E402
from kdroute.monitor.replay import confusion  # noqa: E402

GSM8K = SHARED_DATA / "routellm" / "gsm8k_responses.csv"
CACHE_DIR = Path("/tmp/kdroute-bench-cache")
WINDOW, WINDOWS = 200, 2000


def load():
    from kdroute.route.data import read_recorded_file

    data = read_recorded_file(GSM8K)
    pairs = [Pair(p, s, t) for p, s, t in zip(data.prompts, data.responses["student"],
                                              data.responses["teacher"], strict=True)]
    return pairs, data.q_student >= 0.5, data.q_teacher >= 0.5


def cached_cosines(pairs: list[Pair]) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(p.student + "\x01" + p.teacher for p in pairs)
                            .encode()).hexdigest()[:16]
    path = CACHE_DIR / f"monitor-cosines-{digest}.npy"
    if path.is_file():
        return np.load(path)
    print(f"encoding {2 * len(pairs)} answers (cached afterwards in {path})", flush=True)
    cos = cosines(pairs)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, cos)
    return cos


def tiered(pairs, cos, threshold: float) -> list[Verdict]:
    """The monitor's scorer (answer, then embedding) with these cosines precomputed."""
    lookup = {id(p): c for p, c in zip(pairs, cos, strict=True)}
    scorer = AgreementScorer(("answer", "embedding"), threshold,
                             cosine_fn=lambda ps: np.array([lookup[id(p)] for p in ps]))
    return scorer.score_offline(pairs)


def exact(pairs) -> list[Verdict]:
    norm = [(" ".join(p.student.lower().split()), " ".join(p.teacher.lower().split()))
            for p in pairs]
    return [Verdict("exact", float(a == b), int(a == b)) for a, b in norm]


def figures(verdicts: list[Verdict], s_ok, t_ok, rng_seed: int = 0) -> dict:
    out = confusion(verdicts, [bool(x) for x in s_ok], [bool(x) for x in t_ok])
    v = np.array([np.nan if x.verdict is None else x.verdict for x in verdicts], float)
    both = (s_ok & t_ok).astype(float)
    rng = np.random.default_rng(rng_seed)
    gaps = []
    for _ in range(WINDOWS):
        idx = rng.choice(len(v), WINDOW, replace=False)
        decided = idx[~np.isnan(v[idx])]
        gaps.append(abs(np.nanmean(v[decided]) - both[idx].mean()))
    gaps = np.array(gaps)
    out.update(agreement_rate=float(np.nanmean(v)), both_correct_rate=float(both.mean()),
               mean_abs_window_gap=float(gaps.mean()), p95_window_gap=float(np.percentile(gaps, 95)),
               signed_gap=float(np.nanmean(v) - both.mean()))
    out["methods"] = {m: sum(x.method == m for x in verdicts) for m in {x.method for x in verdicts}}
    return {k: (round(x, 4) if isinstance(x, float) else x) for k, x in out.items()}


def two_fold(pairs, cos, s_ok, t_ok, seed: int = 0) -> dict:
    """Calibrate the threshold on one half, score the other; both halves pooled."""
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(pairs)) % 2
    truth = s_ok >= t_ok
    out: list[Verdict | None] = [None] * len(pairs)
    thresholds = []
    for f in (0, 1):
        fit, test = np.flatnonzero(half == f), np.flatnonzero(half != f)
        t = calibrate_threshold(cos[fit], truth[fit])
        thresholds.append(round(t, 4))
        scored = tiered([pairs[i] for i in test], cos[test], t)
        for i, verdict in zip(test, scored, strict=True):
            out[i] = verdict
    return {"thresholds": thresholds, **figures(out, s_ok, t_ok)}


_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def excess_agreement(pairs, verdicts, s_ok, t_ok) -> tuple[dict, np.ndarray]:
    """Where "agree" and "both correct" part: the grades of agreeing pairs that are not both
    correct. Of those graded student-right/teacher-wrong, the ones whose teacher response's
    *literal* last number (or its `$X.00` spelling) differs from the answer both give are grading
    artefacts: the correct student's answer is the teacher's ("Claire will eat 7 dozens of eggs
    in 4 weeks." graded as 4). Returns the counts and the (N,) mask of those pairs."""
    cells = {"student_right_teacher_wrong": 0, "both_wrong": 0, "student_wrong_teacher_right": 0}
    artefact = np.zeros(len(pairs), bool)
    for i, (p, v, s, t) in enumerate(zip(pairs, verdicts, s_ok, t_ok, strict=True)):
        if v.verdict != 1 or (s and t):
            continue
        key = ("student_right_teacher_wrong" if s else
               "student_wrong_teacher_right" if t else "both_wrong")
        cells[key] += 1
        if s and not t and v.method == "answer":
            answer = extract_answer(p.student, p.prompt)
            numbers = _LAST_NUMBER.findall(p.teacher.replace("$", ""))
            artefact[i] = bool(answer is not None and numbers and
                               numbers[-1].replace(",", "").rstrip(".") != answer.value)
    return {**cells, "teacher_literal_last_number_differs": int(artefact.sum()),
            "tier1_both_extracted": sum(answer_tier(p) is not None for p in pairs)}, artefact


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    x = np.arange(len(names))
    for k, (key, label) in enumerate((("precision", "precision (as right as teacher)"),
                                      ("recall", "recall (both-correct pairs)"),
                                      ("precision_both_correct", "agree => both correct"))):
        ax.bar(x + (k - 1) * 0.27, [results[n][key] for n in names], 0.27, label=label)
    ax.axhline(0.95, color="k", ls="--", lw=1)
    ax.axhline(0.90, color="k", ls=":", lw=1)
    ax.set_xticks(x, [f"{n}\nwindow gap {100 * results[n]['mean_abs_window_gap']:.1f} pts"
                      for n in names], fontsize=8)
    ax.set(ylim=(0, 1.05), title="GSM8K GPT-4 vs Mixtral: agreement scorers (targets dashed)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    from kdroute.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cfg = load_config(Path(__file__).resolve().parents[1] / "config.toml", env={}).monitor
    pairs, s_ok, t_ok = load()
    cos = cached_cosines(pairs)
    calibrated = calibrate_threshold(cos, s_ok >= t_ok)
    print(f"{len(pairs)} pairs; calibrated embedding threshold {calibrated:.4f} (config "
          f"{cfg.embedding_threshold})", flush=True)
    as_run = tiered(pairs, cos, cfg.embedding_threshold) if cfg.tiers == ("answer", "embedding") \
        else None
    if as_run is None:
        raise SystemExit(f"config agreement_method is {cfg.agreement_method!r}; this benchmark "
                         "measures answer+embedding")
    results = {
        "tiered (as run)": figures(as_run, s_ok, t_ok),
        "tiered, 2-fold calibrated": two_fold(pairs, cos, s_ok, t_ok),
        "embedding only": figures([Verdict("embedding", float(c), int(c >= calibrated))
                                   for c in cos], s_ok, t_ok),
        "exact response": figures(exact(pairs), s_ok, t_ok),
    }
    for name, r in results.items():
        print(f"  {name:<26} precision {r['precision']:.3f} (both {r['precision_both_correct']:.3f})"
              f"  recall {r['recall']:.3f}  agreement {r['agreement_rate']:.3f} vs both-correct "
              f"{r['both_correct_rate']:.3f}  window gap {100 * r['mean_abs_window_gap']:.1f} pts",
              flush=True)
    excess, artefact = excess_agreement(pairs, as_run, s_ok, t_ok)
    print(f"  agreeing pairs not both correct: {excess}", flush=True)
    # The same scorer against grades with those artefacts corrected (all 47 checked by hand: the
    # teacher's last sentence states the correct student's answer; rows listed in the JSON).
    regraded = figures(as_run, s_ok, t_ok | artefact)
    print(f"  against regraded teacher grades: precision {regraded['precision']:.3f} (both "
          f"{regraded['precision_both_correct']:.3f}) recall {regraded['recall']:.3f} window gap "
          f"{100 * regraded['mean_abs_window_gap']:.1f} pts", flush=True)
    main_r, base = results["tiered (as run)"], results["embedding only"]
    claims = [
        claim("precision: agree => student as right as the teacher", main_r["precision"],
              ">= 0.95", main_r["precision"] >= 0.95),
        claim("recall: both-correct pairs scored as agreeing", main_r["recall"], ">= 0.90",
              main_r["recall"] >= 0.90),
        claim("mean absolute gap, agreement vs both-correct rate, windows of 200 (points)",
              round(100 * main_r["mean_abs_window_gap"], 2), "<= 3",
              main_r["mean_abs_window_gap"] <= 0.03),
        claim("same, 2-fold calibrated threshold (precision / recall / gap points)",
              f"{results['tiered, 2-fold calibrated']['precision']:.3f} / "
              f"{results['tiered, 2-fold calibrated']['recall']:.3f} / "
              f"{100 * results['tiered, 2-fold calibrated']['mean_abs_window_gap']:.2f}", None, None),
        claim("baseline embedding only: precision / recall / gap points",
              f"{base['precision']:.3f} / {base['recall']:.3f} / "
              f"{100 * base['mean_abs_window_gap']:.2f}", None, None),
        claim("agreeing pairs graded student-right/teacher-wrong whose teacher's literal last "
              "number differs from the shared answer (grading artefacts)",
              f"{excess['teacher_literal_last_number_differs']} of "
              f"{excess['student_right_teacher_wrong']}", None, None),
        claim("mean absolute window gap against teacher grades with those artefacts corrected "
              "(points)", round(100 * regraded["mean_abs_window_gap"], 2), "<= 3",
              regraded["mean_abs_window_gap"] <= 0.03),
    ]
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot({**results, "tiered, regraded teacher": regraded}, RESULTS / "monitor_agreement.png")
        write_result("monitor_agreement", {
            "data": str(GSM8K.relative_to(SHARED_DATA.parent)), "pairs": len(pairs),
            "config": {"agreement_method": cfg.agreement_method,
                       "embedding_threshold": cfg.embedding_threshold},
            "calibrated_threshold": round(calibrated, 4), "window": WINDOW, "windows": WINDOWS,
            "results": results, "excess_agreement": excess, "regraded": regraded,
            "regraded_rows": [int(i) for i in np.flatnonzero(artefact)], "claims": claims,
            "plots": ["results/monitor_agreement.png"],
            "seconds": round(time.perf_counter() - t0, 1)})
    for c in claims:
        print(f"  {c['figure']}: {c['value']} (target {c['target']}, met {c['met']})")


if __name__ == "__main__":
    main()
