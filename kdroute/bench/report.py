"""The bench verdict for people: a terminal table, a Markdown report and a retention bar chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from kdroute.bench.run import BenchResult, Comparison

SPEED_ROWS = (("tokens_per_s", "gen tokens/s", "{:.1f}"), ("latency_p50_ms", "latency p50 ms", "{:.1f}"),
              ("latency_p95_ms", "latency p95 ms", "{:.1f}"), ("params", "parameters", "{:,.0f}"),
              ("peak_memory_mib", "peak memory MiB", "{:.1f}"))


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _p(value: float | None) -> str:
    return "-" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def comparison_cells(c: Comparison) -> list[str]:
    diff = "-" if c.diff is None else f"{c.diff:+.3f} ± {c.diff_stderr:.3f}"
    return [c.task, c.metric.split(",")[0], _num(c.teacher), _num(c.value),
            _num(c.retention), _num(c.chance_corrected), diff, _p(c.p_value),
            c.verdict if not c.note else f"{c.verdict} ({c.note})"]


HEADERS = ["task", "metric", "teacher", "{role}", "retention", "chance-corr.", "diff ± se", "p",
           "verdict"]


def tables(result: BenchResult) -> list[Table]:
    """One table per compared model, then the speed table."""
    out = []
    for role in [r for r in result.models if r != "teacher"]:
        table = Table(title=f"{role} vs teacher  (run {result.run_id})", title_justify="left")
        for header in HEADERS:
            table.add_column(header.format(role=role), justify="left" if header in (
                "task", "metric", "verdict") else "right")
        for c in (c for c in result.comparisons if c.role == role):
            cells = comparison_cells(c)
            style = {"PASS": "green", "FAIL": "red"}.get(c.verdict)
            table.add_row(*cells[:-1], f"[{style}]{cells[-1]}[/]" if style else cells[-1])
        out.append(table)
    out.append(speed_table(result))
    return out


def speed_rows(result: BenchResult) -> list[list[str]]:
    """Rows of (figure, one column per model, speed-up of each non-teacher vs the teacher)."""
    teacher = result.models["teacher"].speed or {}
    rows = []
    for key, label, fmt in SPEED_ROWS:
        cells = [label] + [_num((m.speed or {}).get(key), fmt) for m in result.models.values()]
        rows.append(cells)
    speedups = ["student speed-up (tokens/s ratio)"] + ["-"] * len(result.models)
    for i, model in enumerate(result.models.values()):
        t, s = teacher.get("tokens_per_s"), (model.speed or {}).get("tokens_per_s")
        if model.spec.role != "teacher" and t and s:
            speedups[i + 1] = f"{s / t:.2f}x"
    return rows + [speedups]


def speed_table(result: BenchResult) -> Table:
    table = Table(title="speed on the same prompts", title_justify="left")
    table.add_column("figure")
    for role, model in result.models.items():
        table.add_column(f"{role}{' (cached)' if model.speed_cached else ''}",
                         justify="right")
    for row in speed_rows(result):
        table.add_row(*row)
    return table


def markdown(result: BenchResult, chart: str | None) -> str:
    lines = [f"# kdroute bench {result.run_id}", ""]
    for role, model in result.models.items():
        origin = (f"cached: {', '.join(model.cached_tasks)}" if model.cached_tasks else "evaluated")
        lines.append(f"- **{role}**: `{model.spec.label}` (fingerprint `{model.fingerprint}`, "
                     f"{origin})")
    lines += ["", f"lm-eval {result.lm_eval_version}; tasks: "
              f"{', '.join(t.name for t in result.tasks)}", "", f"**Gate: {result.gate.line()}**",
              ""]
    for role in [r for r in result.models if r != "teacher"]:
        lines += [f"## {role} vs teacher", "", _md_row([h.format(role=role) for h in HEADERS]),
                  _md_row(["---"] * len(HEADERS))]
        lines += [_md_row(comparison_cells(c)) for c in result.comparisons if c.role == role]
        lines.append("")
    lines += ["## Speed", "", _md_row(["figure", *result.models]),
              _md_row(["---"] * (len(result.models) + 1))]
    lines += [_md_row(row) for row in speed_rows(result)]
    if chart:
        lines += ["", "## Retention", "", f"![retention per task]({chart})"]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def retention_chart(result: BenchResult, path: Path, min_retention: float) -> None:
    """Horizontal bars of retention per task and compared model, with the gate line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = [r for r in result.models if r != "teacher"]
    tasks = [t.name for t in result.tasks]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(tasks) * len(roles)))
    height = 0.8 / len(roles)
    for j, role in enumerate(roles):
        values = {c.task: c.retention for c in result.comparisons if c.role == role}
        ys = [i + j * height for i in range(len(tasks))]
        ax.barh(ys, [values.get(t) or 0.0 for t in tasks], height=height, label=role)
        for y, task in zip(ys, tasks, strict=True):
            if values.get(task) is None:
                ax.text(0.01, y, "n/a", va="center", fontsize=8, color="gray")
    ax.axvline(min_retention, color="red", linestyle="--", label=f"gate {min_retention:g}")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(tasks))], tasks)
    ax.invert_yaxis()
    ax.set_xlabel("retention (score / teacher score)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: BenchResult, folder: Path, min_retention: float) -> None:
    """report.md, retention.png and summary.json into `folder`."""
    retention_chart(result, folder / "retention.png", min_retention)
    (folder / "report.md").write_text(markdown(result, "retention.png"), encoding="utf-8")
    summary = {
        "run_id": result.run_id, "gate": {"passed": result.gate.passed,
                                          "line": result.gate.line()},
        "comparisons": [c.__dict__ for c in result.comparisons],
        "speed": {role: m.speed for role, m in result.models.items()},
        "models": {role: {"reference": m.spec.label, "fingerprint": m.fingerprint,
                          "cached_tasks": m.cached_tasks, "evaluated_tasks": m.evaluated_tasks,
                          "skipped": m.skipped} for role, m in result.models.items()},
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
