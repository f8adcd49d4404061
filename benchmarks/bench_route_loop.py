"""Closing the learning loop: does retraining the router on the ledger's shadow pairs make the
routed system better on fresh traffic?

Offline replay with the real components: a router trained on the bench set (default: RouteLLM's
GSM8K) routes "traffic" (default: MMLU, whose subjects are split in two halves, so the fresh
traffic is of subjects the loop never shadowed either). Phase 1: the first half is routed at the
calibrated threshold; the monitor's `StratifiedSampler` picks student-served requests to shadow
(boosted near the threshold, with their inclusion probabilities), and each shadow pair is written
to a real ledger (`Store.insert_shadows`) with the verdict "agree" when the recorded teacher and
student were both right or both wrong. Then `route train --from-ledger`'s code
(`learning_data` + `train_router`) retrains on bench samples plus shadow pairs. Phase 2: both
routers route the second half. Reported: quality at the same teacher share (the share the old
router was calibrated to), the teacher share each needs for the old router's quality, and APGR.

The lead reruns it on the demo pair with `--bench FILE --traffic FILES` (RouteLLM-format files of
the pair's recorded results). Run: `python benchmarks/bench_route_loop.py [--limit N]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED_DATA, claim, write_result  # noqa: E402

ROUTELLM = SHARED_DATA / "routellm"


def at_share(scores, data, share: float) -> float:
    """Mean quality when the top `share` of prompts by score go to the teacher."""
    from kdroute.route import metrics

    curve = metrics.routing_curve(scores, data.q_student, data.q_teacher)
    return float(np.interp(share, curve.calls, curve.quality))


def share_for(scores, data, quality: float) -> float:
    """The smallest teacher share whose mean quality reaches `quality` (1.0 if never)."""
    from kdroute.route import metrics

    curve = metrics.routing_curve(scores, data.q_student, data.q_teacher)
    ok = np.flatnonzero(curve.quality >= quality - 1e-12)
    return float(curve.calls[ok[0]]) if len(ok) else 1.0


def shadow_phase(router, traffic, rate: float, boost: float, seed: int) -> list[dict]:
    """The monitor's sampling over routed traffic: shadow rows for sampled student answers."""
    from kdroute.monitor.sampling import StratifiedSampler

    sampler = StratifiedSampler(rate, near_band=0.1, near_boost=boost, seed=seed)
    scores = router.scorer.score_texts(traffic.prompts)
    rows = []
    for i, s in enumerate(scores):
        if s >= router.threshold:
            continue  # teacher-served: nothing to shadow
        prob = sampler.sample(float(s), router.threshold)
        if prob is None:
            continue
        agree = (traffic.q_student[i] >= 0.5) == (traffic.q_teacher[i] >= 0.5)
        rows.append({"request_id": f"replay-{i}", "kind": "shadow", "status": "ok",
                     "verdict": int(agree), "agreement": float(agree), "method": "recorded",
                     "inclusion_prob": prob, "prompt_text": traffic.prompts[i],
                     "teacher_response": "", "teacher_model": traffic.teacher,
                     "student_model": traffic.student, "router_score": float(s),
                     "threshold": router.threshold, "slice": "all"})
    return rows


def main(argv=None) -> None:
    from kdroute.config import load_config
    from kdroute.route import router_from_artifact
    from kdroute.route.data import read_recorded
    from kdroute.route.train import learning_data, train_router
    from kdroute.store import Store

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", nargs="+", default=[str(ROUTELLM / "gsm8k_responses.csv")])
    parser.add_argument("--traffic", nargs="+", default=[str(ROUTELLM / "mmlu")])
    parser.add_argument("--scorer", default="tfidf")
    parser.add_argument("--rate", type=float, default=0.2, help="shadow sampling rate")
    parser.add_argument("--boost", type=float, default=3.0, help="near-threshold boost")
    parser.add_argument("--limit", type=int, default=0, help="prompts per traffic half (0=all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    settings = load_config(None, env={})
    bench = read_recorded(args.bench)
    traffic = read_recorded(args.traffic)
    subjects = sorted(set(traffic.groups))
    rng = np.random.default_rng(args.seed)
    first = set(rng.permutation(subjects)[: len(subjects) // 2]) if len(subjects) > 1 else set()
    in_first = np.array([g in first for g in traffic.groups]) if first else (
        rng.random(len(traffic)) < 0.5)
    halves = [traffic.subset(np.flatnonzero(m)) for m in (in_first, ~in_first)]
    if args.limit:
        halves = [h.subset(rng.permutation(len(h))[: args.limit]) for h in halves]
    replay, fresh = halves
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ledger.db")
        from kdroute.route.train import import_to_ledger

        import_to_ledger(store, bench, args.bench)
        old = router_from_artifact(train_router(bench, args.scorer, settings, seed=args.seed))
        rows = shadow_phase(old, replay, args.rate, args.boost, args.seed)
        store.insert_shadows(rows)
        data, sources = learning_data(store, student_model=traffic.student)
        new = router_from_artifact(train_router(data, args.scorer, settings, seed=args.seed,
                                                sources=sources))
        store.close()
    old_s, new_s = (r.scorer.score_texts(fresh.prompts) for r in (old, new))
    share = float(np.mean(old_s >= old.threshold))
    q_old, q_new = at_share(old_s, fresh, share), at_share(new_s, fresh, share)
    need_old, need_new = share_for(old_s, fresh, q_old), share_for(new_s, fresh, q_old)
    from kdroute.route import metrics

    apgr = {name: round(metrics.evaluate(s, fresh.q_student, fresh.q_teacher)["apgr"], 4)
            for name, s in (("old", old_s), ("new", new_s))}
    figures = {"scorer": args.scorer, "bench_n": len(bench), "replay_n": len(replay),
               "fresh_n": len(fresh), "sources": sources, "shadow_rate": args.rate,
               "teacher_share": round(share, 4), "quality_old": round(q_old, 4),
               "quality_new": round(q_new, 4), "share_needed_old": round(need_old, 4),
               "share_needed_new": round(need_new, 4), "apgr": apgr,
               "claims": [claim("quality at the same teacher share, new - old",
                                round(q_new - q_old, 4), "> 0", q_new > q_old),
                          claim("teacher share for the old quality, old - new",
                                round(need_old - need_new, 4), "> 0", need_new < need_old)]}
    print(figures)
    if not args.no_write:
        write_result("route_loop", figures)


if __name__ == "__main__":
    main()
