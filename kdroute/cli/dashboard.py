"""`kdroute dashboard`: the Streamlit review dashboard on the ledger, on 127.0.0.1.

The command replaces itself with `python -m streamlit run dashboards/app.py`, so neither
`kdroute --help` nor this module imports Streamlit. The ledger is checked here first (read-only), so a missing file or a
file that is not a ledger stops with one line instead of a page that says so.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import typer

from kdroute.cli.common import console, state
from kdroute.errors import InputError

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
HOST = "127.0.0.1"  # the dashboard shows prompts and costs: never on a public interface


def streamlit_command(app: Path, db: Path, port: int, config: Path | None) -> list[str]:
    """The `streamlit run` command line: loopback only, headless, no usage statistics, no file
    watcher (a review page, not a development server)."""
    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", HOST, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--server.runOnSave", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "viewer",
            "--", "--db", str(db), *(["--config", str(config)] if config else [])]


def _check_port(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise InputError(f"--port {port}: already in use on {HOST}; pass another port"
                             ) from None


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard(
        ctx: typer.Context,
        db: Path | None = typer.Option(None, "--db", help="Ledger to show (default: the "
                                       "configured store.path)."),
        port: int = typer.Option(8501, min=1, max=65535, help="Port on 127.0.0.1."),
    ) -> None:
        """Open the Streamlit review dashboard on the ledger (read-only, on 127.0.0.1).

        Savings against always-teacher, agreement drift and alerts, routing, latency, release benchmarks, training curves and the student's disagreements (downloadable as a distillation set).

        Filters: time range, served model, router version, slice. The ledger is re-read every 30 s, so a running gateway's traffic appears.
        """
        st = state(ctx)
        settings = st.settings
        ledger = (db or settings.path(settings.store.path)).resolve()
        if not APP.is_file():
            raise InputError(f"{APP}: the dashboard page is missing (install kdroute from a "
                             "checkout: pip install -e .)")
        from kdroute.store.views import LedgerView

        LedgerView(ledger).close()  # StoreError (one line) for a missing or foreign file
        _check_port(port)
        console.print(f"kdroute dashboard on http://{HOST}:{port} (ledger {ledger}, read-only); "
                      "Ctrl-C stops it")
        command = streamlit_command(APP, ledger, port, st.config_path)
        sys.stdout.flush()
        # become streamlit: Ctrl-C and SIGTERM reach the server itself, no orphan is left
        os.execv(command[0], command)
