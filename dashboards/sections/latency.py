"""Latency and errors: p50/p95 latency and time to first token per model, status codes."""

from __future__ import annotations

import streamlit as st

from kdroute.review import traffic
from sections import charts


def render(snap, scope) -> None:
    summary = traffic.latency_summary(snap, scope)
    if summary.empty:
        st.info("No requests yet.")
        return
    for metric, title in (("latency", "Latency"), ("ttft", "Time to first token")):
        over = traffic.latency_over_time(snap, scope, metric)
        st.subheader(f"{title} (ms, log scale)")
        if over.empty:
            st.caption("Not measured (only streamed requests have a time to first token).")
            continue
        long = over.melt(id_vars=["time", "served_model"], value_vars=["p50", "p95"],
                         var_name="percentile", value_name="ms")
        charts.show(charts.lines(long, "ms", "ms", color="served_model", dash="percentile",
                                 y_format=",.0f", log=True))
    left, right = st.columns(2)
    with left:
        st.subheader("Over the range")
        st.dataframe(summary.rename(columns={"p50": "p50 ms", "p95": "p95 ms"}), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.1f")
                                    for c in ("p50 ms", "p95 ms")})
        sampled = (f" of every {snap.sample_every}th request" if snap.sample_every > 1 else "")
        st.caption(f"Percentiles read off 40-per-decade histograms{sampled} (within ~3 %).")
    with right:
        st.subheader("Status codes")
        codes = traffic.status_codes(snap, scope)
        charts.show(charts.stacked_bars(codes, "requests", "status", "requests"))
        totals = codes.groupby("status", as_index=False)["requests"].sum()
        st.dataframe(totals, hide_index=True)
