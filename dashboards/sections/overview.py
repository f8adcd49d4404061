"""The overview row: requests, student share, savings, agreement, alerts, breaker, router."""

from __future__ import annotations

import streamlit as st

from sections.fmt import interval, pct, usd

STATE_TEXT = {"below": "below the floor", "above": "above the floor",
              "unsure": "interval spans the floor", "none": "no evaluations yet"}


def render(o: dict, window: int) -> None:
    c = st.columns(4)
    c[0].metric("Requests", f"{o['requests']:,}",
                help=f"{o['served']:,} answered by a model, {o['errors']:,} with an error status")
    c[1].metric("Served by the student", pct(o["student_share"]),
                help="Share of the answered requests the student served")
    gross, net = o["interval"]["gross_share"], o["interval"]["net_share"]
    c[2].metric("Gross savings", usd(o["gross_usd"]), help="Teacher-equivalent minus actual cost")
    c[2].caption(f"{pct(o['gross_share'])} of always-teacher · {interval(*gross)}")
    c[3].metric("Net savings", usd(o["net_usd"]),
                help=f"Gross minus the monitor's shadow and probe cost "
                     f"({usd(o['monitor_cost_usd'])})")
    c[3].caption(f"{pct(o['net_share'])} of always-teacher · {interval(*net)}")
    a = o["agreement"]
    c = st.columns(4)
    c[0].metric("Agreement now", pct(a.rate.value) if a.rate.n else "–",
                help=f"Weighted by 1/inclusion probability over the newest {window} decided "
                     "shadow/probe evaluations; Wilson interval on Kish's effective n")
    c[0].caption(f"[{pct(a.rate.lower)} – {pct(a.rate.upper)}] on {a.rate.n} evaluations · "
                 f"floor {pct(a.floor, 0)}: {STATE_TEXT[a.state]}" if a.rate.n
                 else STATE_TEXT["none"])
    open_alerts = o["open_alerts"]
    c[1].metric("Open alerts", f"{len(open_alerts)}")
    if len(open_alerts):
        c[1].caption(", ".join(f"{r.kind} on {r.slice}" for r in open_alerts.itertuples()))
    held = o["breaker"]
    c[2].metric("Breaker", "open" if held else "closed",
                help="While a quality alert is open its slice is served by the teacher")
    c[2].caption(("all traffic → teacher" if "all" in held else
                  "→ teacher: " + ", ".join(held)) if held else "routing as the router decides")
    c[3].metric("Router in use", o["router_version"] or "–")
    if o["router_version"]:
        threshold = o["router_threshold"]
        c[3].caption(("" if threshold is None else f"threshold {threshold:.3f} · ")
                     + f"last routed request {o['router_seen_at'][:16].replace('T', ' ')} UTC")
