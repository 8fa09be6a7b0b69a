"""``stripe``: relay the outbox to the billing sink, reconcile with Stripe."""

from __future__ import annotations

from datetime import datetime

import click

from billingproxy import shutdown
from billingproxy.billing import Reconciler, Relay, make_sink, stripe_client
from billingproxy.cli.output import emit, json_option, table, utc
from billingproxy.config import BillingSettings, database_url

__all__ = ["command"]

EXIT_RELAY_DEFERRED = 3  # the Cloud Run job shows as failed; the entries wait for the next pass
EXIT_DIFFERENCES = 4  # reconcile found differences and was not asked to fix them


@click.group("stripe")
def command() -> None:
    """Metered billing: relay the outbox to the billing sink, reconcile with Stripe."""


@command.command("relay")
@click.option("--loop", is_flag=True, help="Keep running (else one pass, for a Cloud Run job).")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds between passes."
)
@json_option
def stripe_relay(loop: bool, interval: float, as_json: bool) -> None:
    """Seal closed usage windows into outbox entries and post them, exactly once."""
    settings = BillingSettings.from_env()
    relay = Relay(database_url(), make_sink(settings), settings)
    if loop:
        relay.run_forever(interval, shutdown.stop_event_on_signals())
        return
    stats = relay.run_once()
    emit(stats.to_json(), as_json, lambda: click.echo(" ".join(f"{k}={v}" for k, v in stats.to_json().items())))
    if stats.deferred or stats.failed:
        raise SystemExit(EXIT_RELAY_DEFERRED)


@command.command("reconcile")
@click.option("--from", "start", type=click.DateTime(), required=True, help="Start (UTC), widened to the hour.")
@click.option("--to", "end", type=click.DateTime(), required=True, help="End (UTC), widened to the hour.")
@click.option("--customer", default=None, help="Only this Stripe customer.")
@click.option("--fix", is_flag=True, help="Post missing amounts; cancel our over-reports made in the last 24 h.")
@json_option
def stripe_reconcile(start: datetime, end: datetime, customer: str | None, fix: bool, as_json: bool) -> None:
    """Compare the database's totals with Stripe's meter event summaries per customer and hour."""
    start, end = utc(start), utc(end)
    if end <= start:
        raise click.ClickException("--to must be after --from")
    differences = Reconciler(database_url(), stripe_client(BillingSettings.from_env())).run(
        start, end, fix=fix, customer=customer
    )
    rows = [d.to_json() for d in differences]

    def human() -> None:
        if not rows:
            click.echo("no differences")
            return
        table(rows, ["customer_id", "meter", "hour", "expected", "reported", "difference", "action"])

    emit(rows, as_json, human)
    if differences and not fix:
        raise SystemExit(EXIT_DIFFERENCES)
