"""`kdroute distill`."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def distill() -> None:
        """Distill a student from the teacher (or train by cross-entropy without one)."""
        raise NotBuiltError("`kdroute distill` is not built yet in this version")
