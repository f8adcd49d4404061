"""`kdroute demo`: the whole loop on the embedded local pair, printed as it runs."""

from __future__ import annotations

from pathlib import Path

import typer

from kdroute.cli.common import console, state


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        requests: int = typer.Option(500, min=1, help="Held-out prompts replayed through the "
                                     "gateway (the validation split has 500 outside mc)."),
        bench_limit: int = typer.Option(None, min=1, help="Items per bench task "
                                        "\\[default: the whole test split]."),
        concurrency: int = typer.Option(8, min=1, max=64, help="Requests in flight at once."),
        shadow_rate: float = typer.Option(0.25, min=0.0, max=1.0, help="Share of the student's "
                                          "answers the teacher answers again (monitor."
                                          "shadow_rate of the demo's gateway)."),
        drift: bool = typer.Option(False, "--drift", help="At 30 % of the replay, serve a "
                                   "degraded copy of the student; restore it at 60 %: the alert "
                                   "opens, "
                                   "the breaker moves traffic to the teacher, and recovers."),
        fresh: bool = typer.Option(False, "--fresh", help="Rebuild everything: distill the "
                                   "student again (into student.model), a new ledger, bench "
                                   "and router."),
        db: Path = typer.Option(None, "--db", help="The demo's ledger \\[default: "
                                "runs/demo/kdroute.db beside the config]."),
        seed: int = typer.Option(0, help="Order of the replayed prompts."),
    ) -> None:
        """Run the whole pipeline on the embedded default (tiny local models).

        Distills the demo student if missing, benches it against the teacher, trains a router
        on the paired results, serves the gateway with shadowing on, replays held-out prompts
        through it with the openai client (and the same prompts forced to each model) and
        prints quality, teacher share by difficulty, savings, agreement and alerts from the
        ledger. Re-running reuses what is built unless --fresh.
        """
        from kdroute.demo.report import outcome_group
        from kdroute.demo.run import DemoOptions, run_demo

        st = state(ctx)
        opts = DemoOptions(requests=requests, bench_limit=bench_limit, concurrency=concurrency,
                           shadow_rate=shadow_rate, drift=drift, fresh=fresh, db=db, seed=seed)
        result = run_demo(st.settings, st.config_path, opts, console)
        console.rule("[bold]what routing did")
        console.print(outcome_group(result, drift))
        t = result["timings_s"]
        console.print(f"wall time {t['total']:.0f} s; every replayed request logged: "
                      f"{result['logged']}; figures in {result['outcome_file']}", highlight=False)
        console.print(f"open the dashboard on this ledger: {result['dashboard']}",
                      markup=False, highlight=False)
