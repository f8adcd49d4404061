"""The demo's outcome as rich renderables (the command prints them; nothing here prints)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text


def pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.1%}"


def usd(x: float) -> str:
    return f"${x:.6f}"


def agreement_line(a: dict) -> str:
    if not a["n"]:
        return "no shadow evaluations"
    return (f"{a['value']:.1%} [{a['lower']:.1%}, {a['upper']:.1%}] (Wilson "
            f"{a['confidence']:.0%}, {a['n']} shadow pairs, effective n {a['n_eff']:.0f})")


def answered_table(o: dict) -> Table:
    table = Table("served by", "why", "requests", "share", "exact match", title="who answered")
    for row in o["answered_by"]:
        table.add_row(row["role"], row["reason"], str(row["requests"]),
                      pct(row["requests"] / o["requests"]), pct(row["accuracy"]))
    return table


def quality_table(o: dict) -> Table:
    acc = o["accuracy"]
    table = Table("system (same prompts)", "exact match", "of always-teacher", "teacher share",
                  title="quality against the gold answers")
    teacher = acc["always_teacher"]
    for name, key, share in (("routed (kdroute/auto)", "routed", o["teacher_share"]),
                             ("always teacher", "always_teacher", 1.0),
                             ("always student", "always_student", 0.0)):
        table.add_row(name, pct(acc[key]), pct(acc[key] / teacher if teacher else None),
                      pct(share), style="bold" if key == "routed" else None)
    return table


def levels_table(o: dict) -> Table:
    by_level = o["teacher_share_by_level"]
    levels = sorted({lvl for fam in by_level.values() for lvl in fam})
    table = Table("family", *[f"L{lvl}" for lvl in levels], "all",
                  title="teacher share by difficulty level (routed traffic)")
    for family, cells in by_level.items():
        n = sum(c["requests"] for c in cells.values())
        share = sum(c["teacher_share"] * c["requests"] for c in cells.values()) / n
        table.add_row(family, *[f"{cells[lvl]['teacher_share']:.0%}" if lvl in cells else ""
                                for lvl in levels], f"{share:.0%}")
    return table


def savings_lines(o: dict) -> Text:
    s = o["savings"]
    return Text("\n".join([
        f"cost {usd(s['actual_usd'])} vs always-teacher {usd(s['teacher_equivalent_usd'])} "
        f"over {s['requests']} requests",
        f"gross savings {usd(s['gross_usd'])} ({pct(s['gross_share'])}); shadow and probe "
        f"calls cost {usd(s['monitor_cost_usd'])}; net savings {usd(s['net_usd'])} "
        f"({pct(s['net_share'])})"]))


def alerts_table(o: dict) -> Table | Text:
    if not o["alerts"]:
        return Text(f"drift status: no alert opened during the replay ({o['open_alerts']} open "
                    "in the ledger)")
    table = Table("alert", "slice", "opened after request", "resolved after request",
                  "message", title=f"drift status: alerts of this replay ({o['open_alerts']} "
                  "still open)")
    for a in o["alerts"]:
        resolved = a["resolved_at_request"]
        table.add_row(a["kind"], a["slice"], str(a["opened_at_request"]),
                      "still open" if a["resolved_at"] is None else str(resolved),
                      a["message"] or "")
    return table


def phases_table(o: dict) -> Table:
    table = Table("requests", "student", "served by student", "teacher (router)",
                  "teacher (breaker)", "exact match", "student agreement",
                  title="the drift, phase by phase")
    for p in o["phases"]:
        a = p["student_agreement"]
        table.add_row(f"{p['first']}-{p['end'] - 1}", p["label"], str(p["student_served"]),
                      str(p["teacher_by_router"]), str(p["teacher_by_breaker"]),
                      pct(p["accuracy"]), f"{pct(a['value'])} (n={a['n']})")
    return table


def outcome_group(o: dict, drift: bool) -> Group:
    parts = [answered_table(o), quality_table(o), levels_table(o), savings_lines(o),
             Text(f"agreement of shadowed student answers with the teacher: "
                  f"{agreement_line(o['agreement'])}; alert floor {o['agreement_floor']:g}"),
             alerts_table(o)]
    if drift:
        parts.append(phases_table(o))
    return Group(*parts)
