"""Stages that this version does not have yet: each says so in one line and exits non-zero."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError

monitor_app = typer.Typer(help="Shadow evaluation, agreement drift and alerts.",
                          no_args_is_help=True)


def _not_built(stage: str) -> None:
    raise NotBuiltError(f"`kdroute {stage}` is not built yet in this version")


@monitor_app.command("status")
def monitor_status() -> None:
    """Show shadow agreement, the drift statistic and open alerts."""
    _not_built("monitor status")


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard() -> None:
        """Open the Streamlit dashboard on the ledger (read-only)."""
        _not_built("dashboard")

    @app.command("demo")
    def demo() -> None:
        """Run the whole pipeline on the embedded default (tiny local models)."""
        _not_built("demo")
