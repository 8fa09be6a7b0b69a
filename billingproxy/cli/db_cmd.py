"""``db``: the schema."""

from __future__ import annotations

import click

from billingproxy import db
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

    def human() -> None:
        for migration in applied:
            click.echo(f"applied {migration.path.name}")
        click.echo("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")

    emit({"applied": [m.path.name for m in applied]}, as_json, human)
