"""Stages that this version does not have yet: each says so in one line and exits non-zero."""

from __future__ import annotations

import typer

from kdroute.errors import NotBuiltError


def _not_built(stage: str) -> None:
    raise NotBuiltError(f"`kdroute {stage}` is not built yet in this version")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        bench_limit: int = typer.Option(300, min=1, help="Items per skill-suite task to bench "
                                        "(300 = the whole test split)."),
        requests: int = typer.Option(120, min=1, help="Chat requests sent through the gateway."),
        retrain: bool = typer.Option(False, "--retrain",
                                     help="Distill the student again even if it exists."),
    ) -> None:
        """Run the whole pipeline on the embedded default (tiny local models).

        Distills the demo student from the committed demo teacher (if not there yet), benches it
        against the teacher, trains a router on the paired results, serves the gateway on a free
        loopback port, sends it chat traffic and prints the savings and quality from the ledger.
        """
        from kdroute.cli.common import state
        from kdroute.demo import DemoOptions, run_demo

        st = state(ctx)
        run_demo(st.settings, st.config_path,
                 DemoOptions(bench_limit=bench_limit, requests=requests, retrain_student=retrain))
