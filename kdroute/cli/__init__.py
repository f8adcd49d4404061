"""The `kdroute` command: one group or command per pipeline stage.

Each stage's commands live in their own module here and import their heavy libraries inside the
command body, so `kdroute --help` stays fast and light.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kdroute.cli import bench, dashboard, db, demo, distill, monitor, route, serve
from kdroute.cli.common import State, err_console
from kdroute.errors import KdrouteError

app = typer.Typer(
    name="kdroute",
    help="Distill, benchmark, route and monitor teacher/student LLM pairs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from kdroute import __version__

        typer.echo(f"kdroute {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="KDROUTE_CONFIG",
        help="Config file (default: ./config.toml if present, else built-in defaults).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Distill, benchmark, route and monitor teacher/student LLM pairs."""
    ctx.obj = State(config_path=config)


distill.register(app)
bench.register(app)
app.add_typer(route.app, name="route")
serve.register(app)
app.add_typer(monitor.app, name="monitor")
demo.register(app)
dashboard.register(app)
app.add_typer(db.app, name="db")


def main() -> None:
    """Console entry point: domain errors become one line on stderr and their exit code."""
    try:
        app()
    except KdrouteError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
