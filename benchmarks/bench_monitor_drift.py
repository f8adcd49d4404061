"""Drift detection: false alerts, detection delay and recovery of the monitor's detectors, on
seeded Bernoulli streams and on real MMLU results replayed easy-then-hard.

Claims (floor 0.85, window 200, min_samples 50, 95 % Wilson bounds, CUSUM ARL 50,000 — the
detector exactly as the gateway runs it, evaluated after every sample, i.e. the worst case of a
poll per evaluation):
- stationary agreement 0.90: at most 1 false alert (quality or decay) per 10,000 samples;
- a drop 0.90 -> 0.75: the quality alert (the one that opens the breaker) within 300 samples of
  the change, median and 95th percentile over seeded streams;
- recovery 0.75 -> 0.90: the alert resolves and the breaker (`Breaker.update` on the open quality
  alerts) closes, in every stream.
Baseline, same streams: the same window judged by its point estimate (alert when the window's
rate is below the floor, resolve when above), i.e. without intervals or hysteresis.

Real data: RouteLLM's recorded MMLU results (GPT-4 teacher, Mixtral student, 29 subjects) with
agreement := the student is as right as the teacher. Subjects are ranked by that rate; the top
third is streamed first (shuffled, seeded), then the bottom third. Reported: how many samples after
the switch the quality alert opens (median over seeds), and any alert during the easy phase.

Run: `python benchmarks/bench_monitor_drift.py` (about 3 minutes on one core).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS, SHARED_DATA, claim, write_result  # noqa: E402
from kdroute.monitor.breaker import Breaker  # noqa: E402
from kdroute.monitor.detect import (  # noqa: E402
    Detector,
    DetectorSettings,
    Observation,
    SliceWindow,
    cusum_arl,
    run_stream,
)
from kdroute.monitor.metrics import MonitorMetrics  # noqa: E402

SETTINGS = DetectorSettings(floor=0.85, window=200, min_samples=50, confidence=0.95,
                            decay_margin=0.05, decay_arl=50_000)
CHANGE_AT = 1000  # samples of agreement 0.90 before the drop
RECOVER_AT = 2000  # the drop lasts this long, then agreement is 0.90 again


def bernoulli(rng: random.Random, rates) -> list[Observation]:
    return [Observation(float(rng.random() < p)) for p in rates]


def naive_events(observations, s: DetectorSettings) -> list[tuple[int, str]]:
    """Baseline: the window's point estimate against the floor, no interval, no hysteresis."""
    window, is_open, events = SliceWindow(s.window), False, []
    for i, obs in enumerate(observations):
        window.add(obs.verdict, obs.inclusion_prob)
        if len(window.items) < s.min_samples:
            continue
        rate = window.swy / window.sw
        if not is_open and rate < s.floor:
            is_open = True
            events.append((i, "open"))
        elif is_open and rate >= s.floor:
            is_open = False
            events.append((i, "resolve"))
    return events


def false_alerts(streams: int, length: int) -> dict:
    counts = {"quality": 0, "decay": 0, "naive": 0}
    for seed in range(streams):
        obs = bernoulli(random.Random(seed), [0.90] * length)
        for _, act in run_stream(Detector(SETTINGS), obs):
            if act.action == "open":
                counts[act.kind] += 1
        counts["naive"] += sum(1 for _, e in naive_events(obs, SETTINGS) if e == "open")
    total = streams * length
    per_10k = {k: v / total * 10_000 for k, v in counts.items()}
    return {"samples": total, "alerts": counts, "per_10k": per_10k,
            "per_10k_monitor": (counts["quality"] + counts["decay"]) / total * 10_000}


def drop_and_recover(streams: int) -> dict:
    """0.90, then 0.75 from CHANGE_AT, then 0.90 again from RECOVER_AT."""
    rates = [0.90] * CHANGE_AT + [0.75] * (RECOVER_AT - CHANGE_AT) + [0.90] * 1500
    quality, decay, naive, resolve, released, early = [], [], [], [], 0, 0
    for seed in range(streams):
        obs = bernoulli(random.Random(10_000 + seed), rates)
        events = run_stream(Detector(SETTINGS), obs)
        opens = [i for i, a in events if a.action == "open" and a.kind == "quality"
                 and i >= CHANGE_AT]
        early += sum(1 for i, a in events if a.action == "open" and i < CHANGE_AT)
        quality.append(opens[0] - CHANGE_AT if opens else None)
        dec = [i for i, a in events if a.action == "open" and a.kind == "decay"
               and i >= CHANGE_AT]
        decay.append(dec[0] - CHANGE_AT if dec else None)
        nv = [i for i, e in naive_events(obs, SETTINGS) if e == "open" and i >= CHANGE_AT]
        naive.append(nv[0] - CHANGE_AT if nv else None)
        res = [i for i, a in events if a.action == "resolve" and a.kind == "quality"
               and i >= RECOVER_AT]
        resolve.append(res[-1] - RECOVER_AT if res else None)
        released += breaker_released(events)
    return {"streams": streams, "quality_delay": summary(quality), "decay_delay": summary(decay),
            "naive_delay": summary(naive), "resolve_delay": summary(resolve),
            "breaker_released_streams": released, "alerts_before_change": early,
            "quality_delays": quality}


def breaker_released(events) -> int:
    """1 if the breaker, fed the open quality alerts after each event, ends closed having been
    open."""
    breaker = Breaker(True, 4, MonitorMetrics())
    open_now: set[str] = set()
    was_open = False
    for _, act in events:
        if act.kind != "quality":
            continue
        (open_now.add if act.action == "open" else open_now.discard)(act.slice)
        breaker.update(open_now)
        was_open = was_open or bool(breaker.open_slices)
    return int(was_open and not breaker.open_slices)


def summary(delays) -> dict:
    found = sorted(d for d in delays if d is not None)
    if not found:
        return {"detected": 0, "median": None, "p95": None}
    return {"detected": len(found), "missed": len(delays) - len(found),
            "median": statistics.median(found),
            "p95": round(float(np.percentile(found, 95)), 1), "max": found[-1]}


def mmlu_replay(seeds: int) -> dict:
    from kdroute.route.data import read_recorded

    data = read_recorded([SHARED_DATA / "routellm" / "mmlu"])
    ok = (data.q_student >= data.q_teacher).astype(float)
    groups = np.array(data.groups)
    subjects = sorted(set(data.groups), key=lambda s: -ok[groups == s].mean())
    third = len(subjects) // 3
    easy, hard = subjects[:third], subjects[-third:]
    easy_idx = np.flatnonzero(np.isin(groups, easy))
    hard_idx = np.flatnonzero(np.isin(groups, hard))
    delays, decay, easy_alerts, traces = [], [], 0, None
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = np.r_[rng.permutation(easy_idx), rng.permutation(hard_idx)]
        obs = [Observation(ok[i]) for i in order]
        events = run_stream(Detector(SETTINGS), obs)
        switch = len(easy_idx)
        easy_alerts += sum(1 for i, a in events if a.action == "open" and i < switch)
        opens = [i - switch for i, a in events if a.action == "open" and a.kind == "quality"
                 and i >= switch]
        delays.append(opens[0] if opens else None)
        dec = [i - switch for i, a in events if a.action == "open" and a.kind == "decay"
               and i >= switch]
        decay.append(dec[0] if dec else None)
        if seed == 0:
            traces = trace(obs), events, switch
    return {"easy_subjects": easy, "hard_subjects": hard,
            "easy_samples": int(len(easy_idx)), "hard_samples": int(len(hard_idx)),
            "easy_rate": float(ok[easy_idx].mean()), "hard_rate": float(ok[hard_idx].mean()),
            "seeds": seeds, "quality_delay": summary(delays), "decay_delay": summary(decay),
            "alerts_in_easy_phase": easy_alerts, "delays": delays}, traces


def trace(obs) -> np.ndarray:
    """(N, 3) rolling value, lower, upper after each sample."""
    window, out = SliceWindow(SETTINGS.window), []
    for o in obs:
        window.add(o.verdict, o.inclusion_prob)
        r = window.rate(SETTINGS.confidence)
        out.append((r.value, r.lower, r.upper))
    return np.array(out)


def plot(drop: dict, traces, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    rates, events, switch = traces
    x = np.arange(1, len(rates) + 1)
    ax1.fill_between(x, rates[:, 1], rates[:, 2], alpha=0.25, label="95 % Wilson interval")
    ax1.plot(x, rates[:, 0], lw=1, label="rolling agreement (200)")
    ax1.axhline(SETTINGS.floor, color="k", ls="--", lw=1, label=f"floor {SETTINGS.floor}")
    ax1.axvline(switch, color="grey", lw=1, label="easy -> hard subjects")
    for i, act in events:
        color = "red" if act.action == "open" else "green"
        ax1.axvline(i + 1, color=color, lw=1, ls=":" if act.kind == "decay" else "-")
    ax1.set(title="MMLU replay (seed 0): red = alert opens, dotted = decay",
            xlabel="evaluation", ylabel="student as right as teacher", ylim=(0.5, 1.0))
    ax1.legend(fontsize=7, loc="lower left")
    found = [d for d in drop["quality_delays"] if d is not None]
    ax2.hist(found, bins=30)
    ax2.axvline(300, color="k", ls="--", lw=1, label="target 300")
    ax2.set(title=f"drop 0.90 -> 0.75: samples to the quality alert ({len(found)} streams)",
            xlabel="samples after the change", ylabel="streams")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="10,000-sample null streams")
    parser.add_argument("--drops", type=int, default=200, help="drop-and-recover streams")
    parser.add_argument("--seeds", type=int, default=20, help="MMLU replay shuffles")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("kdroute.monitor").setLevel(logging.ERROR)  # one breaker line per switch
    t0 = time.perf_counter()
    det = Detector(SETTINGS)
    h = det.cusum.h
    arl = {"h": h, "arl_in_control": cusum_arl(0.90, 0.90, 0.85, h),
           "arl_at_0.75": cusum_arl(0.75, 0.90, 0.85, h)}
    print(f"CUSUM h = {h:.3f}: ARL {arl['arl_in_control']:.0f} at 0.90, "
          f"{arl['arl_at_0.75']:.0f} at 0.75", flush=True)
    null = false_alerts(args.streams, 10_000)
    print(f"null 0.90: {null['per_10k']} per 10k ({time.perf_counter() - t0:.0f} s)", flush=True)
    drop = drop_and_recover(args.drops)
    print(f"drop: quality {drop['quality_delay']}, decay {drop['decay_delay']}, naive "
          f"{drop['naive_delay']}, resolve {drop['resolve_delay']}, released "
          f"{drop['breaker_released_streams']}/{drop['streams']} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    mmlu, traces = mmlu_replay(args.seeds)
    print(f"MMLU: easy {mmlu['easy_rate']:.3f} ({mmlu['easy_samples']}), hard "
          f"{mmlu['hard_rate']:.3f} ({mmlu['hard_samples']}): quality alert "
          f"{mmlu['quality_delay']} after the switch, decay {mmlu['decay_delay']}, "
          f"{mmlu['alerts_in_easy_phase']} alerts in the easy phase", flush=True)
    qd, md = drop["quality_delay"], mmlu["quality_delay"]
    claims = [
        claim("false alerts per 10,000 samples at agreement 0.90, floor 0.85 (quality + decay)",
              round(null["per_10k_monitor"], 3), "<= 1", null["per_10k_monitor"] <= 1),
        claim("same, baseline: window point estimate below the floor",
              round(null["per_10k"]["naive"], 2), None, None),
        claim("drop 0.90 -> 0.75: samples to the quality alert, median", qd["median"], "<= 300",
              qd["median"] is not None and qd["median"] <= 300 and qd["detected"] == drop["streams"]),
        claim("drop 0.90 -> 0.75: samples to the quality alert, 95th percentile", qd["p95"],
              "<= 300", qd["p95"] is not None and qd["p95"] <= 300),
        claim("drop 0.90 -> 0.75: samples to the decay (CUSUM) alert, median",
              drop["decay_delay"]["median"], None, None),
        claim("recovery to 0.90: streams whose alert resolved and breaker closed",
              f"{drop['breaker_released_streams']}/{drop['streams']}", "all",
              drop["breaker_released_streams"] == drop["streams"]),
        claim("recovery: samples to the resolution, median", drop["resolve_delay"]["median"],
              None, None),
        claim("MMLU easy -> hard subjects: samples after the switch to the quality alert, median",
              md["median"], "reported", md["detected"] == mmlu["seeds"]),
        claim("MMLU: alerts during the easy phase (all seeds)", mmlu["alerts_in_easy_phase"],
              None, None),
    ]
    plot_path = RESULTS / "monitor_drift.png"
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(drop, traces, plot_path)
        drop.pop("quality_delays")
        write_result("monitor_drift", {
            "settings": SETTINGS.__dict__, "cusum": arl, "null": null, "drop_and_recover": drop,
            "mmlu_replay": mmlu, "claims": claims, "plots": ["results/monitor_drift.png"],
            "seconds": round(time.perf_counter() - t0, 1)})
    for c in claims:
        print(f"  {c['figure']}: {c['value']} (target {c['target']}, met {c['met']})")


if __name__ == "__main__":
    main()
