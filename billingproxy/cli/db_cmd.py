"""``db``: the schema."""

from __future__ import annotations

import click

from billingproxy import db, prices
from billingproxy.cli.output import emit, json_option

__all__ = ["command"]


@click.group("db")
def command() -> None:
    """Database schema."""


@command.command("migrate")
@click.option("--target", type=int, default=None, help="Stop at this migration version.")
@json_option
def db_migrate(target: int | None, as_json: bool) -> None:
    """Apply pending migrations (re-running is a no-op)."""
    applied = db.migrate(target=target)
    imported = []
    if target is None:
        with db.connect() as conn:
            imported = prices.import_config_prices(conn)

    def human() -> None:
        for migration in applied:
            click.echo(f"applied {migration.path.name}")
        click.echo("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")
        for version in imported:
            click.echo(f"price version {version.id} for {version.model} from config.yaml")

    emit(
        {"applied": [m.path.name for m in applied], "imported_prices": [v.to_json() for v in imported]},
        as_json,
        human,
    )
