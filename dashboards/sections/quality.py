"""Quality and drift: agreement with its band and the floor, per slice, alerts, input drift."""

from __future__ import annotations

import altair as alt
import streamlit as st

from kdroute.review import quality
from sections import charts


def render(snap, scope, floor: float, confidence: float, window: int,
           slice_floors: dict[str, float] | None = None) -> None:
    over = quality.agreement_over_time(snap, scope, confidence, window)
    st.subheader("Agreement with the teacher")
    if over.empty:
        st.info("No shadow evaluations yet: they appear once the monitor samples student "
                "answers (monitor.shadow_rate).")
    else:
        charts.show(charts.band_with_floor(over, floor, "agreement"))
        st.caption(f"Each point: the trailing {int(over['buckets'].iloc[0])} {snap.unit}(s) "
                   f"(≈{window} evaluations), weighted by 1/inclusion probability, "
                   f"{confidence:.0%} Wilson band; dashed red: the floor {floor:.0%}.")
    st.subheader("Per slice")
    table = quality.slices(snap, scope, confidence, floor, slice_floors)
    if table.empty:
        st.info("No slices yet.")
    else:
        st.dataframe(table, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="percent") for c in
            ("agreement", "lower", "upper", "floor")})
    _alerts(snap, scope)
    _input_drift(snap, scope)


def _alerts(snap, scope) -> None:
    st.subheader("Alerts")
    timeline = quality.alert_timeline(snap, scope)
    if timeline.empty:
        st.info("No alerts in this range.")
        return
    timeline = timeline.assign(row=timeline["kind"] + " · " + timeline["slice"])
    charts.show(charts.timeline(timeline))
    st.dataframe(timeline[["kind", "slice", "state", "opened_at", "resolved_at", "statistic",
                           "value", "bound", "threshold", "n", "message"]], hide_index=True)


def _input_drift(snap, scope) -> None:
    st.subheader("Input drift: router scores now vs the router's calibration")
    summary, bins = quality.input_drift(snap, scope)
    if summary.empty:
        st.info("No router scores yet.")
        return
    versions = list(summary["router_version"])
    for column, version in zip(st.columns(len(versions)), versions, strict=True):
        with column:
            part = bins[bins["router_version"] == version]
            chart = alt.Chart(part).mark_line(interpolate="step-after", point=True).encode(
                x=alt.X("low:Q", title="router score", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("share:Q", title="share of requests", axis=alt.Axis(format="%")),
                color=alt.Color("distribution:N", title=None,
                                legend=alt.Legend(orient="bottom")),
                tooltip=["distribution:N", "low:Q", alt.Tooltip("share:Q", format=".1%")])
            st.caption(f"**{version}**")
            charts.show(chart)
    st.dataframe(summary, hide_index=True,
                 column_config={"PSI": st.column_config.NumberColumn(format="%.3f")})
    st.caption("PSI < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift. The reference is "
               "the router's calibration split when its artifact recorded a score histogram, "
               "else the version's first day of traffic.")
