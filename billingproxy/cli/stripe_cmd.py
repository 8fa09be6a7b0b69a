"""``stripe``: relay the outbox to the billing sink, reconcile with Stripe, check the account's
meters and customers, list late usage."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from billingproxy import db, shutdown
from billingproxy.billing import Reconciler, Relay, StripeApi, check_account, late_entries, make_sink, stripe_client
from billingproxy.cli.output import emit, json_option, table, tenant_store, utc
from billingproxy.config import BillingSettings, database_url

__all__ = ["command"]

EXIT_RELAY_DEFERRED = 3  # the Cloud Run job shows as failed; the entries wait for the next pass
EXIT_DIFFERENCES = 4  # reconcile found differences and was not asked to fix them
EXIT_MISCONFIGURED = 5  # stripe check found problems


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
    if stats.deferred or stats.failed or stats.held:
        raise SystemExit(EXIT_RELAY_DEFERRED)


@command.command("reconcile")
@click.option("--from", "start", type=click.DateTime(), required=True, help="Start (UTC), widened to the hour.")
@click.option("--to", "end", type=click.DateTime(), required=True, help="End (UTC), widened to the hour.")
@click.option("--customer", default=None, help="Only this Stripe customer.")
@click.option("--fix", is_flag=True, help="Post missing amounts; cancel our over-reports made in the last 24 h.")
@click.option(
    "--settle-minutes",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="Compare only hours that ended, and had nothing sent, this long ago (Stripe's summaries lag).",
)
@json_option
def stripe_reconcile(
    start: datetime, end: datetime, customer: str | None, fix: bool, settle_minutes: int, as_json: bool
) -> None:
    """Compare the database's totals with Stripe's meter event summaries per customer and hour."""
    start, end = utc(start), utc(end)
    if end <= start:
        raise click.ClickException("--to must be after --from")
    reconciler = Reconciler(database_url(), stripe_client(BillingSettings.from_env()))
    differences = reconciler.run(start, end, fix=fix, customer=customer, settle=timedelta(minutes=settle_minutes))
    rows = [d.to_json() for d in differences]

    def human() -> None:
        if reconciler.unsettled:
            click.echo(f"{len(reconciler.unsettled)} hours not settled yet (within --settle-minutes): left for later")
        if not rows:
            click.echo("no differences")
            return
        table(rows, ["customer_id", "meter", "hour", "expected", "reported", "difference", "action"])

    emit(rows, as_json, human)
    if differences and not fix:
        raise SystemExit(EXIT_DIFFERENCES)


@command.command("check")
@json_option
def stripe_check(as_json: bool) -> None:
    """Check that Stripe bills what we send: each meter we post to exists, is active, sums, and
    reads our payload keys; each linked tenant's customer exists with a subscription item priced
    on each meter. One line per problem; exit 5 when there is any."""
    settings = BillingSettings.from_env()
    with tenant_store() as store:
        linked = [(t.stripe_customer_id, f"tenant {t.name}") for t in store.list_tenants() if t.stripe_customer_id]
    problems = check_account(StripeApi(stripe_client(settings)), settings.meters, linked)

    def human() -> None:
        for problem in problems:
            click.echo(problem.line())
        meters = ", ".join(m.event_name for m in settings.meters)
        verdict = f"{len(problems)} problems" if problems else "ok"
        click.echo(f"{verdict}: {len(settings.meters)} meters ({meters}), {len(linked)} linked customers checked")

    emit([p.to_json() for p in problems], as_json, human)
    if problems:
        raise SystemExit(EXIT_MISCONFIGURED)


@command.command("late")
@click.option("--since", type=click.DateTime(), required=True, help="Usage windows from (UTC).")
@click.option("--customer", default=None, help="Only this Stripe customer.")
@json_option
def stripe_late(since: datetime, customer: str | None, as_json: bool) -> None:
    """Entries whose billing period was already invoiced: posted into the open period instead."""
    with db.connect(database_url()) as conn:
        rows = late_entries(conn, utc(since), customer)

    def human() -> None:
        if not rows:
            click.echo("no late usage")
            return
        columns = ["identifier", "customer_id", "meter", "window_start", "posted_as", "value", "status"]
        table(rows, columns)

    emit(rows, as_json, human)
