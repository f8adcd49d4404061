"""The sidebar: time range, served model, router version and slice, as one Scope."""

from __future__ import annotations

import streamlit as st

from kdroute import review
from kdroute.review.common import FORMAT, parse_bucket
from kdroute.store.queries import Scope

PRETTY = {"minute": "%b %d %H:%M", "hour": "%b %d %H:00", "day": "%b %d"}


def _pick(label: str, options: list[str], key: str) -> tuple[str, ...] | None:
    """A multiselect where nothing chosen means everything (None: no restriction)."""
    if len(options) <= 1:
        return None
    chosen = st.multiselect(label, options, default=[], key=key, placeholder="all")
    return tuple(chosen) if chosen else None


def sidebar(snap: review.Snapshot) -> Scope:
    st.sidebar.header("Filters")
    buckets = snap.buckets()
    since = until = None
    with st.sidebar:
        if len(buckets) > 1:
            unit = snap.unit
            lo, hi = st.select_slider(
                f"Time range (UTC, by {unit})", options=buckets, value=(buckets[0], buckets[-1]),
                format_func=lambda b: parse_bucket(b, unit).strftime(PRETTY[unit]), key="time")
            since = lo if lo != buckets[0] else None
            until = review.until_after(hi, unit) if hi != buckets[-1] else None
        elif buckets:
            st.caption(f"All traffic falls in one {snap.unit} "
                       f"({parse_bucket(buckets[0], snap.unit).strftime(FORMAT[snap.unit])}).")
        options = snap.options()
        models = _pick("Served model", options["served_model"], "served_model")
        versions = _pick("Router version", options["router_version"], "router_version")
        slices = _pick("Slice", options["slice"], "slice")
        st.caption("Empty = all. Bench runs and training curves are not filtered.")
    return Scope(since=since, until=until, served_models=models, router_versions=versions,
                 slices=slices)
