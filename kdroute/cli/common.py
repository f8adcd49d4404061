"""What every CLI module shares: the lazily loaded config and store, and the consoles."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from kdroute.config import Settings
    from kdroute.store import Store

# Piped or logged output has no terminal width; rich would assume 80 columns and cut the bench and
# route tables' numbers to "0.6…". Use a wide page there instead (COLUMNS still wins).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err_console = Console(stderr=True)


@dataclass
class State:
    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from kdroute.config import load_config

            self._settings = load_config(self.config_path)
        return self._settings

    def store(self) -> Store:
        from kdroute.store import Store

        return Store.from_settings(self.settings)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = State()
    return root.obj
