"""`kdroute db ...`: where the ledger is, what it holds, and its migrations."""

from __future__ import annotations

import typer

from kdroute.cli.common import console, state

app = typer.Typer(help="Inspect and migrate the SQLite ledger.", no_args_is_help=True)


@app.command("path")
def path(ctx: typer.Context) -> None:
    """Print the ledger's file path."""
    settings = state(ctx).settings
    typer.echo(str(settings.path(settings.store.path).resolve()))


@app.command("stats")
def stats(ctx: typer.Context) -> None:
    """Row counts of every ledger table."""
    from rich.table import Table

    with state(ctx).store() as store:
        counts = store.stats()
    table = Table("table", "rows")
    for name, n in counts.items():
        table.add_row(name, str(n))
    console.print(table)


@app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (opening the ledger does this too) and list them."""
    from kdroute.store.migrations import migrations

    with state(ctx).store() as store:
        applied = migrations.applied(store.db)
    for m in applied:
        typer.echo(f"{m.name}\t{m.applied_at}")
