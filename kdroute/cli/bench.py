"""`kdroute bench`."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def bench() -> None:
        """Benchmark the student against the teacher with lm-evaluation-harness."""
        raise NotBuiltError("`kdroute bench` is not built yet in this version")
