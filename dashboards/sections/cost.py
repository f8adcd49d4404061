"""Cost: actual vs teacher-equivalent over time, by served model, per 1,000 requests."""

from __future__ import annotations

import streamlit as st

from kdroute.review import traffic
from sections import charts


def render(snap, scope, monitor_cost_usd: float) -> None:
    over = traffic.cost_over_time(snap, scope)
    if over.empty:
        st.info("No requests yet: costs appear here once the gateway has served traffic.")
        return
    long = over.melt(id_vars=["time"], value_vars=["cumulative_actual_usd",
                                                   "cumulative_teacher_usd"],
                     var_name="cost", value_name="usd")
    long["cost"] = long["cost"].map({"cumulative_actual_usd": "actual (routed)",
                                     "cumulative_teacher_usd": "always teacher"})
    left, right = st.columns(2)
    with left:
        st.subheader("Cumulative cost")
        charts.show(charts.lines(long, "usd", "USD", color="cost", y_format="$,.4~f"))
    with right:
        st.subheader(f"Cost per {snap.unit}")
        per = over.melt(id_vars=["time"], value_vars=["actual_usd", "teacher_equivalent_usd"],
                        var_name="cost", value_name="usd")
        per["cost"] = per["cost"].map({"actual_usd": "actual (routed)",
                                       "teacher_equivalent_usd": "always teacher"})
        charts.show(charts.lines(per, "usd", "USD", color="cost", y_format="$,.4~f"))
    left, right = st.columns(2)
    with left:
        st.subheader("Actual cost by served model")
        by_model = traffic.cost_by_model(snap, scope)
        charts.show(charts.stacked_bars(by_model, "cost_usd", "served_model", "USD",
                                        y_format="$,.4~f"))
    with right:
        st.subheader("Per 1,000 requests")
        st.dataframe(traffic.cost_per_1k(snap, scope, monitor_cost_usd), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="$%.4f") for c in
                                    ("actual per 1k", "always-teacher per 1k", "saved per 1k")})
        st.caption("“saved per 1k” on all requests is net of the monitor's shadow and probe "
                   "cost; per model it is gross.")
