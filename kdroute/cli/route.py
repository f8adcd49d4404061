"""`kdroute route ...`: learn, calibrate and evaluate the difficulty router."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError

app = typer.Typer(help="Learn, calibrate and evaluate the difficulty router.", no_args_is_help=True)


@app.command("train")
def train() -> None:
    """Fit, cross-validate and save a router artifact."""
    raise NotBuiltError("`kdroute route train` is not built yet in this version")
