"""Altair chart builders shared by the sections (times are UTC)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

# Vega's default time labels use a 12-hour clock without am/pm at the minute level ("07:33" for
# 19:33): a 24-hour UTC clock instead, seconds on sub-minute ticks and the date at midnight
TIME_LABELS = ("utcseconds(datum.value) != 0 ? utcFormat(datum.value, ':%S') : "
               "utchours(datum.value) == 0 && utcminutes(datum.value) == 0 ? "
               "utcFormat(datum.value, '%b %d') : utcFormat(datum.value, '%H:%M')")
TIME_AXIS = alt.Axis(labelExpr=TIME_LABELS)


def time_x(field: str) -> alt.X:
    return alt.X(f"{field}:T", title="time (UTC)", scale=alt.Scale(type="utc"), axis=TIME_AXIS)


TIME = time_x("time")
HEIGHT = 260


def show(chart: alt.Chart) -> None:
    st.altair_chart(chart.properties(height=HEIGHT), width="stretch")


def lines(frame: pd.DataFrame, y: str, title: str, color: str | None = None,
          y_format: str = ",.4~f", dash: str | None = None, log: bool = False) -> alt.Chart:
    scale = alt.Scale(type="log") if log else alt.Scale()
    enc = {"x": TIME, "y": alt.Y(f"{y}:Q", title=title, axis=alt.Axis(format=y_format),
                                 scale=scale),
           "tooltip": [alt.Tooltip("time:T", format="%Y-%m-%d %H:%M", title="time"),
                       alt.Tooltip(f"{y}:Q", format=y_format)]}
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="bottom"))
        enc["tooltip"].append(f"{color}:N")
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None,
                                           legend=alt.Legend(orient="bottom"))
    return alt.Chart(frame).mark_line(point=len(frame) < 40).encode(**enc)


def stacked_bars(frame: pd.DataFrame, y: str, color: str, title: str,
                 y_format: str = ",d") -> alt.Chart:
    return alt.Chart(frame).mark_bar().encode(
        x=TIME, y=alt.Y(f"{y}:Q", title=title, stack=True, axis=alt.Axis(format=y_format)),
        color=alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"), f"{color}:N",
                 alt.Tooltip(f"{y}:Q", format=y_format)])


def band_with_floor(frame: pd.DataFrame, floor: float, title: str) -> alt.Chart:
    """A rate with its interval band and the floor as a red rule."""
    base = alt.Chart(frame).encode(x=TIME)
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("lower:Q", title=title, scale=alt.Scale(zero=False), axis=alt.Axis(format="%")),
        y2="upper:Q")
    line = base.mark_line(point=len(frame) < 40).encode(
        y="agreement:Q", tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                                  alt.Tooltip("agreement:Q", format=".1%"),
                                  alt.Tooltip("lower:Q", format=".1%"),
                                  alt.Tooltip("upper:Q", format=".1%"), "decided:Q"])
    rule = alt.Chart(pd.DataFrame({"floor": [floor]})).mark_rule(
        color="#d62728", strokeDash=[6, 3]).encode(y="floor:Q")
    return band + line + rule


def histogram(frame: pd.DataFrame, thresholds: pd.DataFrame) -> alt.Chart:
    """Router-score bins per version (as shares of the version's requests, overlaid) with each
    version's threshold as a rule."""
    bars = alt.Chart(frame).mark_bar(opacity=0.55).encode(
        x=alt.X("low:Q", bin="binned", title="router score (p(teacher needed))",
                scale=alt.Scale(domain=[0, 1])),
        x2="high:Q", y=alt.Y("share:Q", stack=None, title="share of requests",
                             axis=alt.Axis(format="%")),
        color=alt.Color("router_version:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["router_version:N", "low:Q", "high:Q", "requests:Q",
                 alt.Tooltip("share:Q", format=".1%")])
    rules = alt.Chart(thresholds).mark_rule(strokeDash=[6, 3], size=2).encode(
        x="threshold:Q", color="router_version:N", tooltip=["router_version:N", "threshold:Q"])
    return bars + rules


def timeline(frame: pd.DataFrame) -> alt.Chart:
    return alt.Chart(frame).mark_bar(height=14, cornerRadius=3).encode(
        x=time_x("start"), x2="end:T",
        y=alt.Y("row:N", title=None, sort=None, axis=alt.Axis(labelLimit=260)),
        color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="bottom")),
        opacity=alt.condition(alt.datum.state == "open", alt.value(1.0), alt.value(0.55)),
        tooltip=["kind:N", "slice:N", "state:N", "statistic:N", "value:Q", "bound:Q",
                 "threshold:Q", "n:Q", alt.Tooltip("start:T", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("end:T", format="%Y-%m-%d %H:%M"), "message:N"])


def grouped_bars(frame: pd.DataFrame, y: str, title: str, rule: float | None = None,
                 y_format: str = ".0%") -> alt.Chart:
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X("task:N", title=None, axis=alt.Axis(labelAngle=-30)), xOffset="role:N",
        y=alt.Y(f"{y}:Q", title=title, axis=alt.Axis(format=y_format)),
        color=alt.Color("role:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["task:N", "role:N", alt.Tooltip(f"{y}:Q", format=".3f")])
    if rule is None:
        return bars
    return bars + alt.Chart(pd.DataFrame({"bar": [rule]})).mark_rule(
        color="#d62728", strokeDash=[6, 3]).encode(y="bar:Q")
