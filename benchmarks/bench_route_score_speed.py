"""One uncached `tfidf` score (issue 14): the numpy path over each prompt's hashed non-zeros
against the sparse-matrix path it replaced (TF-IDF block stacked with the zero-weight lexical
block by scipy, then a sparse product), on the same fitted scorer and the same prompts.

Claim: p50 of an uncached learned `tfidf` score <= 1 ms; the ratio old/new is reported (same run,
interleaved, so load on the shared machine hits both alike). Both paths give the same score
(tests/test_route_scorers.py checks 1e-9). Fit on RouteLLM's GSM8K prompts, timed on GSM8K and
MMLU prompts. Run: `python benchmarks/bench_route_score_speed.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_route_routellm import load_sets  # noqa: E402
from benchmarks.common import claim, write_result  # noqa: E402


def main(n: int = 400) -> None:
    from kdroute.route.base import sigmoid
    from kdroute.route.data import make_labels
    from kdroute.route.registry import build_scorer

    sets = load_sets()
    gsm = sets["gsm8k"]
    scorer = build_scorer("tfidf").fit(gsm.prompts, make_labels(gsm.q_student, gsm.q_teacher,
                                                                "expected_gain"))
    rng = np.random.default_rng(0)
    pool = gsm.prompts + sets["mmlu"].prompts
    prompts = [pool[i] for i in rng.choice(len(pool), n, replace=False)]

    def old(p):
        return sigmoid(scorer.features([p]) @ scorer.w + scorer.b)

    def new(p):
        return scorer.score_texts([p])

    old(prompts[0]), new(prompts[0])  # warm-up (vectorizer built, imports done)
    times = {"old": [], "new": []}
    for p in prompts:  # interleaved: both see the same load
        for name, fn in (("old", old), ("new", new)):
            t0 = time.perf_counter()
            fn(p)
            times[name].append((time.perf_counter() - t0) * 1000)
    stats = {k: {"p50_ms": round(float(np.percentile(v, 50)), 4),
                 "p99_ms": round(float(np.percentile(v, 99)), 4)} for k, v in times.items()}
    ratio = round(stats["old"]["p50_ms"] / stats["new"]["p50_ms"], 2)
    for k, v in stats.items():
        print(f"{k}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
    print(f"old/new p50 ratio {ratio}")
    figures = {"n": n, "scorer": "tfidf", "fit_on": "gsm8k", "sparse_path": stats["old"],
               "numpy_path": stats["new"], "p50_ratio_old_over_new": ratio,
               "p99_ratio_old_over_new": round(stats["old"]["p99_ms"]
                                               / stats["new"]["p99_ms"], 2),
               "claims": [claim("uncached tfidf score p50 (ms)", stats["new"]["p50_ms"],
                                "<= 1", stats["new"]["p50_ms"] <= 1.0),
                          claim("p50 sparse path / numpy path", ratio, "> 1", ratio > 1)]}
    write_result("route_score_speed", figures)


if __name__ == "__main__":
    main()
