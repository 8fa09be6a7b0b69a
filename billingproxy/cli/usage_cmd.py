"""``usage``: reports and replays."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from billingproxy.cli.output import emit, json_option, table, tenant_store, utc
from billingproxy.config import database_url
from billingproxy.metering import replay_files, usage_report
from billingproxy.metering.reports import plain

__all__ = ["command"]


@click.group("usage")
def command() -> None:
    """Usage reports and replays."""


@command.command("report")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant id or name.")
@click.option("--from", "start", type=click.DateTime(), required=True, help="Start (UTC), inclusive.")
@click.option("--to", "end", type=click.DateTime(), required=True, help="End (UTC), exclusive.")
@json_option
def usage_report_command(tenant_ref: str, start: datetime, end: datetime, as_json: bool) -> None:
    """Per-model usage and cost for one tenant over [from, to)."""
    start, end = utc(start), utc(end)
    if end <= start:
        raise click.ClickException("--to must be after --from")
    with tenant_store() as store:
        found = store.get_tenant(tenant_ref)
        report = usage_report(store.conn, found.id, start, end)

    def human() -> None:
        click.echo(f"{found.name} ({found.id})  {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
        columns = ["model", "requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"]
        table(report.models, columns)
        click.echo(f"total cost: {plain(report.total_cost_usd)} USD")

    emit(report.to_json(), as_json, human)


@command.command("replay")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@json_option
def usage_replay(files: tuple[str, ...], as_json: bool) -> None:
    """Ingest spill files or exported JSON log lines; records already stored are skipped."""
    read, inserted = replay_files(database_url(), [Path(f) for f in files])
    counts = {"read": read, "inserted": inserted, "already_stored": read - inserted}
    emit(
        counts,
        as_json,
        lambda: click.echo(f"read {read} records, inserted {inserted}, skipped {read - inserted} already stored"),
    )
