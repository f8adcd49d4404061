"""`kdroute serve`."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def serve() -> None:
        """Run the OpenAI-compatible routing gateway."""
        raise NotBuiltError("`kdroute serve` is not built yet in this version")
