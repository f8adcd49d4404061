"""`kdroute monitor ...`: the quality monitor's state, and its scorer and detector offline.

Light at import: the scorer's encoder, numpy and pandas load inside the commands that need them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from kdroute.cli.common import console, state
from kdroute.errors import InputError

app = typer.Typer(help="Shadow evaluation, agreement drift, alerts and the quality breaker.",
                  no_args_is_help=True)


@app.command("status")
def status(
    ctx: typer.Context,
    since: str | None = typer.Option(None, help="Savings since this ISO date/time (UTC), "
                                     "e.g. 2026-01-31. Default: everything in the ledger."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Agreement with intervals per slice, open alerts, breaker state, gross and net savings.

    Agreement is read from the ledger's newest shadow/probe evaluations exactly as the gateway's
    detector reads them (rolling window of monitor.window, weighted by 1/inclusion probability).
    """
    from kdroute.monitor.report import monitor_status

    settings = state(ctx).settings
    with state(ctx).store() as store:
        report = monitor_status(store, settings, since)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _print_status(report)


def _print_status(report: dict) -> None:
    from rich.table import Table

    cfg = report["config"]
    console.print(f"agreement floor {cfg['floor']:g} (window {cfg['window']}, min samples "
                  f"{cfg['min_samples']}, {cfg['confidence']:.0%} Wilson bounds); breaker "
                  f"{'on' if cfg['breaker'] else 'off'}", highlight=False, soft_wrap=True)
    table = Table("slice", "n", "agreement", "lower", "upper", "state")
    for row in report["agreement"]:
        table.add_row(row["slice"], str(row["n"]), f"{row['value']:.3f}", f"{row['lower']:.3f}",
                      f"{row['upper']:.3f}", row["state"])
    console.print(table if report["agreement"] else "no shadow evaluations in the ledger yet")
    breaker = report["breaker_open"]
    console.print("breaker: " + (f"OPEN for {', '.join(breaker)} (routed to the teacher)"
                                 if breaker else "closed"), highlight=False, soft_wrap=True)
    if report["open_alerts"]:
        alerts = Table("id", "kind", "slice", "opened", "value", "bound", "n", "message")
        for a in report["open_alerts"]:
            alerts.add_row(str(a["id"]), a["kind"], a["slice"], a["opened_at"],
                           _num(a["value"]), _num(a["bound"]), str(a["n"] or ""),
                           a["message"] or "")
        console.print(alerts)
    else:
        console.print("no open alerts")
    ev = report["evaluations"]
    console.print(f"evaluations: {ev['shadow_ok']} shadow, {ev['probe_ok']} probe, "
                  f"{ev['failed']} failed; monitor spend today ${report['spent_today_usd']:.4f} "
                  f"of ${cfg['budget_usd']:g}", highlight=False, soft_wrap=True)
    s = report["savings"]
    console.print(f"savings over {s['requests']} requests: gross ${s['gross_usd']:.4f} "
                  f"({s['gross_share']:.1%} of all-teacher ${s['teacher_equivalent_usd']:.4f}), "
                  f"monitor cost ${s['monitor_cost_usd']:.4f}, net ${s['net_usd']:.4f} "
                  f"({s['net_share']:.1%})", highlight=False, soft_wrap=True)


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("agree")
def agree(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV or JSONL of recorded pairs."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write each pair's method, "
                                "score and verdict (.csv or .jsonl)."),
    prompt_column: str = typer.Option("prompt", help="Column with the prompt."),
    student_column: str = typer.Option("student_response", help="Column with the student's "
                                       "answer."),
    teacher_column: str = typer.Option("teacher_response", help="Column with the teacher's "
                                       "answer."),
    student_correct: str | None = typer.Option(None, help="Optional True/False column: was the "
                                               "student right? Prints precision and recall."),
    teacher_correct: str | None = typer.Option(None, help="Optional True/False column: was the "
                                               "teacher right?"),
    calibrate: bool = typer.Option(False, "--calibrate", help="With the correctness columns: "
                                   "print the embedding threshold these pairs support."),
) -> None:
    """Score recorded (prompt, student answer, teacher answer) pairs with the monitor's scorer.

    Uses monitor.agreement_method's answer and embedding tiers (the judge runs only in the
    gateway). Check the scorer on your own data before trusting its alerts.
    """
    from kdroute.monitor.report import agree_file

    settings = state(ctx).settings
    if calibrate and not (student_correct and teacher_correct):
        raise InputError("--calibrate needs --student-correct and --teacher-correct")
    result = agree_file(settings, file, output, prompt_column, student_column, teacher_column,
                        student_correct, teacher_correct, calibrate)
    print_agreement(result, output)


@app.command("replay")
def replay(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV/JSONL: a shadow_evals export (verdict column), "
                                "recorded answers, or RouteLLM correctness columns."),
    floor: float | None = typer.Option(None, min=0, max=1, help="Agreement floor (default: "
                                       "monitor.agreement_floor)."),
    window: int | None = typer.Option(None, min=10, help="Window (default: monitor.window)."),
    min_samples: int | None = typer.Option(None, min=1, help="Default: monitor.min_samples."),
    verdict_column: str = typer.Option("verdict", help="Verdict column of a ledger export."),
    student_answer: str | None = typer.Option(None, help="Column with student answers (scored)."),
    teacher_answer: str | None = typer.Option(None, help="Column with teacher answers (scored)."),
    student: str | None = typer.Option(None, help="RouteLLM student correctness column."),
    teacher: str | None = typer.Option(None, help="RouteLLM teacher correctness column."),
    slice_column: str | None = typer.Option(None, help="Column naming each row's slice "
                                            "(e.g. the task family)."),
) -> None:
    """Run the drift detector over recorded pairs and print where alerts would have opened.

    Rows are taken in file order as one stream; agreement is the verdict column, the scored
    answers, or "the student is as right as the teacher". Tune the floor here before going live.
    """
    from kdroute.monitor.report import replay_file

    settings = state(ctx).settings
    result = replay_file(settings, file, floor=floor, window=window, min_samples=min_samples,
                         verdict_column=verdict_column, student_answer=student_answer,
                         teacher_answer=teacher_answer, student=student, teacher=teacher,
                         slice_column=slice_column)
    print_replay(result)


def print_agreement(result: dict, output: Path) -> None:
    methods = ", ".join(f"{m} {n}" for m, n in sorted(result["methods"].items()))
    console.print(f"scored {result['pairs']} pairs ({methods}): agreement "
                  f"{result['agreement']:.3f}; wrote {output}", highlight=False, soft_wrap=True)
    truth = result.get("truth")
    if truth:
        from rich.table import Table

        table = Table("", "both correct", "not both correct")
        table.add_row("agree", str(truth["agree_both_correct"]), str(truth["agree_not_both"]))
        table.add_row("disagree", str(truth["disagree_both_correct"]),
                      str(truth["disagree_not_both"]))
        console.print(table)
        console.print(f"precision of agree => student as right as the teacher "
                      f"{truth['precision']:.3f} (agree => both correct "
                      f"{truth['precision_both_correct']:.3f}); recall of both-correct pairs "
                      f"{truth['recall']:.3f}; {truth['undecided']} undecided", highlight=False, soft_wrap=True)
    if "calibrated_threshold" in result:
        console.print(f"embedding threshold for precision >= 0.95 on these pairs: "
                      f"{result['calibrated_threshold']:.4f} (monitor.embedding_threshold)",
                      highlight=False, soft_wrap=True)


def print_replay(result: dict) -> None:
    from rich.table import Table

    st = result["settings"]
    skipped = f", {result['skipped']} undecided skipped" if result["skipped"] else ""
    console.print(f"{result['samples']} evaluations from {result['file']} ({result['source']}"
                  f"{skipped}): agreement {result['agreement']:.3f}; floor {st['floor']:g}, "
                  f"window {st['window']}, min samples {st['min_samples']}", highlight=False, soft_wrap=True)
    if not result["events"]:
        console.print("no alert would have opened")
        return
    table = Table("sample", "event", "kind", "slice", "value", "bound", "n")
    for e in result["events"]:
        table.add_row(str(e["sample"]), e["action"], e["kind"], e["slice"], f"{e['value']:.3f}",
                      f"{e['bound']:.3f}", str(e["n"]))
    console.print(table)
