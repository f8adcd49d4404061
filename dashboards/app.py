"""kdroute's review dashboard: savings, quality drift, routing, latency, releases, training.

Start it with `kdroute dashboard` (or `streamlit run dashboards/app.py -- --db LEDGER
[--config FILE]`). The ledger is opened read-only; this page holds layout only, every figure
comes from `kdroute.review` on the store's read-only views.
"""

from __future__ import annotations

import argparse
import sys

import streamlit as st
from sections import (
    cost,
    data,
    disagreements,
    filters,
    latency,
    overview,
    quality,
    releases,
    routing,
)

from kdroute.errors import KdrouteError
from kdroute.review import overview as figures

TABS = ["Cost", "Quality & drift", "Routing", "Latency & errors", "Release benchmarks",
        "Training", "Disagreements"]


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    parser.add_argument("--config")
    return parser.parse_known_args(sys.argv[1:])[0]


def _open(args: argparse.Namespace):
    """(settings, ledger path, snapshot), or an error box and stop."""
    from kdroute.config import load_config

    try:
        settings = load_config(args.config)
        path = str(args.db or settings.path(settings.store.path))
        return settings, path, data.snapshot(path)
    except KdrouteError as exc:
        st.error(str(exc), icon="🚫")
        st.stop()


def main() -> None:
    st.set_page_config(page_title="kdroute dashboard", page_icon="📉", layout="wide")
    settings, path, snap = _open(_args())
    st.title("kdroute")
    st.caption(f"Ledger `{path}` (read-only, re-read every {data.TTL_S} s) · times in UTC")
    if snap.empty:
        st.info("No data yet: this ledger is empty. `kdroute serve` logs every request "
                "here; `kdroute demo` fills its own (`kdroute dashboard --db "
                "runs/demo/kdroute.db`).")
    scope = filters.sidebar(snap)
    mon = settings.monitor
    parts, recent, newest = data.scoped(path, scope, mon.window)
    numbers = figures.overview(snap, scope, parts, recent, mon.agreement_floor, mon.confidence)
    overview.render(numbers, mon.window)
    tabs = st.tabs(TABS)
    with tabs[0]:
        cost.render(snap, scope, numbers["monitor_cost_usd"])
    with tabs[1]:
        quality.render(snap, scope, mon.agreement_floor, mon.confidence, mon.window,
                       mon.slice_floors)
    with tabs[2]:
        routing.render(snap, scope)
    with tabs[3]:
        latency.render(snap, scope)
    with tabs[4]:
        releases.render_bench(snap, settings.bench.min_retention)
    with tabs[5]:
        releases.render_training(snap)
    with tabs[6]:
        disagreements.render(path, scope, newest)


main()
