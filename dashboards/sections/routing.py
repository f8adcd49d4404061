"""Routing: score histogram with the threshold, teacher share, fallbacks, router versions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdroute.review import traffic
from sections import charts


def render(snap, scope) -> None:
    hist = traffic.score_histogram(snap, scope)
    share = traffic.teacher_share(snap, scope)
    if hist.empty and share.empty:
        st.info("No routed requests yet.")
    left, right = st.columns(2)
    with left:
        st.subheader("Router scores and thresholds")
        if not hist.empty:
            thresholds = _thresholds(snap, hist)
            charts.show(charts.histogram(hist, thresholds))
    with right:
        st.subheader("Teacher share")
        if not share.empty:
            charts.show(charts.lines(share, "teacher_share", "share to the teacher",
                                     y_format="%"))
    left, right = st.columns(2)
    with left:
        st.subheader("Route reasons")
        reasons = traffic.route_reasons(snap, scope)
        if not reasons.empty:
            charts.show(charts.stacked_bars(reasons, "requests", "route_reason", "requests"))
    with right:
        st.subheader("Fallbacks to the teacher")
        if not share.empty:
            charts.show(charts.stacked_bars(share.assign(kind="fallback"), "fallbacks", "kind",
                                            "requests"))
            st.caption(f"{int(share['fallbacks'].sum()):,} fallbacks in range (the student "
                       "failed or was too slow, the teacher answered).")
    st.subheader("Router versions")
    table = traffic.routers(snap, scope)
    if table.empty:
        st.info("No router in the ledger yet (`kdroute route train` records one).")
    else:
        st.dataframe(table, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="percent") for c in
            ("CPT(50%)", "CPT(80%)", "calibrated teacher share", "teacher share")})
        st.caption("APGR and CPT from the router's held-out split (cross-validation where it has "
                   "none); random routing scores APGR ≈ 0.5.")


def _thresholds(snap, hist: pd.DataFrame) -> pd.DataFrame:
    versions = hist["router_version"].unique()
    known = snap.routers.set_index("version")["threshold"] if not snap.routers.empty else {}
    rows = [{"router_version": v, "threshold": float(known[v])} for v in versions
            if v in known]
    if not rows and snap.latest_router[1] is not None:
        rows = [{"router_version": snap.latest_router[0], "threshold": snap.latest_router[1]}]
    return pd.DataFrame(rows, columns=["router_version", "threshold"])
