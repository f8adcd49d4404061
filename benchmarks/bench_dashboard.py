"""Claim: the dashboard stays responsive on a 1,000,000-request ledger: 100x the rows of a
10,000-request ledger costs well under 10x the time, for the first render and for a filter change.

Both ledgers are written by `kdroute.store.synthetic` (same 30 days, same seed, so the same
buckets, slices and versions; only the row count differs). Each timing is the page script run by
Streamlit's AppTest (server side: SQL, pandas, building every chart and table of every tab; the
browser's drawing is not included): the first render with Streamlit's cache cleared, then a filter
change on the warm page (slice, served model, router version, time range in turn). Rounds
interleave the two sizes so a busy machine slows both alike; medians are reported. Writes
benchmarks/results/dashboard.json and results/dashboard.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, claim, write_result  # noqa: E402

APP = ROOT / "dashboards" / "app.py"
FILTERS = [("slice", ["family:arith"]), ("served_model", ["hosted_vllm/kdroute-student"]),
           ("router_version", ["tfidf-v1"]), ("time", None)]


def buckets(path: Path) -> list[str]:
    from kdroute import review
    from kdroute.store.views import LedgerView

    with LedgerView(path) as view:
        return review.load(view).buckets()


def render(path: Path, times: list[str]) -> tuple[float, list[float], int]:
    """(first render s, filter change s each, requests shown) of one cold page; `times` are
    the ledger's bucket labels (the time filter's options)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    sys.argv = ["app.py", "--db", str(path)]
    at = AppTest.from_file(str(APP), default_timeout=600)
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    assert not at.exception, [e.message for e in at.exception]
    shown = next(m.value for m in at.metric if m.label == "Requests")
    changes = []
    for key, value in FILTERS:
        if key == "time":
            widget = at.select_slider(key="time").set_range(times[3], times[-4])
        else:
            widget = at.multiselect(key=key).set_value(value)
        start = time.perf_counter()
        widget.run()
        changes.append(time.perf_counter() - start)
        assert not at.exception, [e.message for e in at.exception]
        if key != "time":  # back to all (applied with the next change)
            at.multiselect(key=key).set_value([])
    return first, changes, int(shown.replace(",", ""))


def plot(sizes: list[int], first: dict, change: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = range(len(sizes))
    ax.bar([i - 0.2 for i in x], [first[n] for n in sizes], 0.4, label="first render")
    ax.bar([i + 0.2 for i in x], [change[n] for n in sizes], 0.4, label="filter change")
    ax.set_xticks(list(x), [f"{n:,} requests" for n in sizes])
    ax.set_ylabel("seconds (median)")
    ax.set_title("kdroute dashboard: page script time (AppTest)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from kdroute.store.synthetic import Synthetic, write_synthetic

    sizes = [args.small, args.large]
    with tempfile.TemporaryDirectory() as tmp:
        paths, build_s = {}, {}
        for n in sizes:
            paths[n] = Path(tmp) / f"ledger-{n}.db"
            start = time.perf_counter()
            write_synthetic(paths[n], Synthetic(requests=n, days=30, seed=0))
            build_s[n] = time.perf_counter() - start
            print(f"{n:,} requests written in {build_s[n]:.1f} s")
        times = {n: buckets(paths[n]) for n in sizes}
        render(paths[args.small], times[args.small])  # warm-up (imports, first start): untimed
        firsts = {n: [] for n in sizes}
        changes = {n: [] for n in sizes}
        for r in range(args.rounds):
            for n in sizes:
                first, change, shown = render(paths[n], times[n])
                assert shown == n
                firsts[n].append(first)
                changes[n] += change
                print(f"round {r + 1}: {n:,} requests: first render {first:.2f} s, filter "
                      f"changes {', '.join(f'{c:.2f}' for c in change)} s")
    first = {n: statistics.median(v) for n, v in firsts.items()}
    change = {n: statistics.median(v) for n, v in changes.items()}
    first_ratio = first[args.large] / first[args.small]
    change_ratio = change[args.large] / change[args.small]
    rows = args.large / args.small
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(sizes, first, change, RESULTS / "dashboard.png")
    write_result("dashboard", {
        "claims": [
            claim(f"first render, {args.large:,} vs {args.small:,} requests (time ratio)",
                  round(first_ratio, 2), f"< 10 for {rows:.0f}x the rows", first_ratio < 10),
            claim(f"filter change, {args.large:,} vs {args.small:,} requests (time ratio)",
                  round(change_ratio, 2), f"< 10 for {rows:.0f}x the rows", change_ratio < 10),
            claim(f"first render at {args.large:,} requests (s, median)",
                  round(first[args.large], 2)),
            claim(f"filter change at {args.large:,} requests (s, median)",
                  round(change[args.large], 2)),
        ],
        "plots": ["results/dashboard.png"],
        "first_render_s": {str(n): v for n, v in firsts.items()},
        "filter_change_s": {str(n): v for n, v in changes.items()},
        "median_first_render_s": {str(n): v for n, v in first.items()},
        "median_filter_change_s": {str(n): v for n, v in change.items()},
        "ledger_build_s": {str(n): v for n, v in build_s.items()},
        "filters": [k for k, _ in FILTERS], "rounds": args.rounds,
        "note": "AppTest runs the page script server-side (SQL, pandas, chart specs); the "
                "browser's drawing is not timed. Histograms of ledgers over 100,000 requests are "
                "read from every k-th request.",
    })


if __name__ == "__main__":
    main()
