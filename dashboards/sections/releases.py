"""Release benchmarks (teacher vs student and the routed system, retention, gate, speed) and
training curves."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from kdroute.review import releases
from sections import charts


def render_bench(snap, min_retention: float) -> None:
    runs = releases.bench_runs(snap)
    if runs.empty:
        st.info("No bench run yet: `kdroute bench` scores the student against the teacher.")
        return
    run = st.selectbox("Bench run", runs["run"], key="bench_run",
                       format_func=lambda r: f"{r} · {runs.set_index('run').loc[r, 'models']}")
    row = runs.set_index("run").loc[run]
    passed = row["passed"]
    verdict = st.info if passed is None or pd.isna(passed) else st.success if passed else st.warning
    verdict(f"Gate: {row['gate']}")
    scores = releases.bench_scores(snap, run)
    if scores.empty:
        st.info("This run has no task scores.")
        return
    left, right = st.columns(2)
    with left:
        st.subheader("Score per task")
        charts.show(charts.grouped_bars(scores, "value", "score"))
    with right:
        st.subheader("Retention (score / teacher's)")
        kept = scores[scores["role"] != "teacher"].dropna(subset=["retention"])
        charts.show(charts.grouped_bars(kept, "retention", "retention", rule=min_retention))
        st.caption(f"Dashed red: the gate's minimum retention {min_retention:.0%}.")
    table = scores.pivot_table(index=["task", "metric"], columns="role", values="value")
    st.dataframe(table.reset_index(), hide_index=True)
    st.subheader("Speed")
    speed = releases.speed(snap, run)
    if speed.empty:
        st.caption("No speed test in this run.")
    else:
        st.dataframe(speed, hide_index=True)


def render_training(snap) -> None:
    runs = releases.distill_runs(snap)
    if runs.empty:
        st.info("No distill run yet: `kdroute distill` logs its loss curves here.")
        return
    chosen = st.multiselect("Distill runs", runs["run"], default=list(runs["run"][:3]),
                            key="distill_runs",
                            format_func=lambda r: f"{r} · {runs.set_index('run').loc[r, 'name']}")
    curves = releases.training_curves(snap, chosen)
    names = {r.run: r.name or r.run for r in runs.itertuples()}
    if curves.empty:
        st.info("These runs logged no training metrics.")
        return
    for split, title in (("train", "Training loss"), ("validation", "Validation loss")):
        part = curves[curves["split"] == split]
        if part.empty:
            continue
        st.subheader(title)
        part = part.assign(run=part["run_id"].map(names))
        chart = alt.Chart(part).mark_line(point=split == "validation").encode(
            x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title="loss"),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
            strokeDash=alt.StrokeDash("run:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["run:N", "series:N", "step:Q", alt.Tooltip("value:Q", format=".4f")])
        charts.show(chart)
    st.dataframe(runs, hide_index=True)
