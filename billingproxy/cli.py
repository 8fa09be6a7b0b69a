"""``python -m billingproxy``: the operator CLI. DATABASE_URL comes from the environment."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from billingproxy import db
from billingproxy.settings import ConfigError
from billingproxy.tenants import ApiKey, InvalidInput, NotFound, Tenant, TenantStore

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


def _table(rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    rows = [{c: "" if r.get(c) is None else str(r.get(c)) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns))


@contextmanager
def _store():
    """A TenantStore on a fresh connection; operator mistakes become one clear error line."""
    try:
        with db.connect() as conn:
            yield TenantStore(conn)
    except (InvalidInput, NotFound, ConfigError, db.MigrationError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """BillingProxy operator CLI."""


# ---- db ----------------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("migrate")
@click.option("--target", type=int, default=None, help="Stop at this migration version.")
def db_migrate(target: int | None) -> None:
    """Apply pending migrations (re-running is a no-op)."""
    try:
        applied = db.migrate(target=target)
    except (ConfigError, db.MigrationError) as exc:
        raise click.ClickException(str(exc)) from None
    for migration in applied:
        click.echo(f"applied {migration.path.name}")
    click.echo("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")


# ---- tenants -----------------------------------------------------------------------------

TENANT_COLUMNS = ["id", "name", "status", "allowed_models", "budget_usd", "budget_period", "rpm_limit", "tpm_limit"]


def _show_tenant(tenant: Tenant, as_json: bool) -> None:
    data = tenant.to_json()
    _emit(data, as_json, lambda: [click.echo(f"{k:20} {v}") for k, v in data.items()])


@main.group()
def tenant() -> None:
    """Create and manage tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--budget-usd", default=None, help="Budget per period in USD (omit for none).")
@click.option("--budget-period", type=click.Choice(["monthly", "daily", "total"]), default="monthly")
@click.option("--models", default=None, help="Comma-separated allowed models (omit for all).")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option("--stripe-customer", default=None, help="Stripe customer id (cus_…).")
@json_option
def tenant_create(name, budget_usd, budget_period, models, rpm, tpm, stripe_customer, as_json) -> None:
    """Create a tenant."""
    with _store() as store:
        created = store.create_tenant(
            name,
            models=models,
            budget_usd=budget_usd,
            budget_period=budget_period,
            rpm_limit=rpm,
            tpm_limit=tpm,
            stripe_customer_id=stripe_customer,
        )
    _show_tenant(created, as_json)


@tenant.command("list")
@json_option
def tenant_list(as_json: bool) -> None:
    """List tenants."""
    with _store() as store:
        tenants = [t.to_json() for t in store.list_tenants()]
    _emit(tenants, as_json, lambda: _table(tenants, TENANT_COLUMNS))


@tenant.command("show")
@click.argument("tenant_ref", metavar="TENANT")
@json_option
def tenant_show(tenant_ref: str, as_json: bool) -> None:
    """Show one tenant (by id or name) with its spend, reserved and remaining budget this period."""
    from billingproxy.budget import period_start
    from billingproxy.budget_store import period_status

    with _store() as store:
        found = store.get_tenant(tenant_ref)
        status = period_status(store.conn, found.id, period_start(found.budget_period), found.budget_usd)
    data = {**found.to_json(), **{k: v if v is None else str(v) for k, v in status.items()}}
    _emit(data, as_json, lambda: [click.echo(f"{k:20} {v}") for k, v in data.items()])


_CLEAR = "none"


def _optional(value: str | None, parse: Callable[[str], Any] = str) -> Any:
    """CLI value → store argument: omitted keeps, 'none' clears."""
    if value is None:
        return TenantStore._UNSET
    return None if value.lower() == _CLEAR else parse(value)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"expected a whole number or 'none', got {value!r}") from None


@tenant.command("update")
@click.argument("tenant_ref", metavar="TENANT")
@click.option("--name", default=None)
@click.option("--budget-usd", default=None, help="New budget in USD, or 'none' to remove it.")
@click.option("--budget-period", type=click.Choice(["monthly", "daily", "total"]), default=None)
@click.option("--models", default=None, help="Comma-separated allowed models; '' allows all.")
@click.option("--rpm", default=None, help="Requests per minute, or 'none'.")
@click.option("--tpm", default=None, help="Tokens per minute, or 'none'.")
@click.option("--stripe-customer", default=None, help="Stripe customer id, or 'none'.")
@click.option("--price-multiplier", default=None, help="Markup on the billed amount, e.g. 1.2 (resellers).")
@json_option
def tenant_update(
    tenant_ref, name, budget_usd, budget_period, models, rpm, tpm, stripe_customer, price_multiplier, as_json
) -> None:
    """Change a tenant's settings; omitted options stay as they are."""
    with _store() as store:
        updated = store.update_tenant(
            tenant_ref,
            name=name,
            models=models,
            budget_usd=_optional(budget_usd),
            budget_period=budget_period,
            rpm_limit=_optional(rpm, _int),
            tpm_limit=_optional(tpm, _int),
            stripe_customer_id=_optional(stripe_customer),
            price_multiplier=price_multiplier,
        )
    _show_tenant(updated, as_json)


def _status_command(name: str, status: str, help_text: str) -> None:
    @tenant.command(name, help=help_text)
    @click.argument("tenant_ref", metavar="TENANT")
    @json_option
    def command(tenant_ref: str, as_json: bool) -> None:
        with _store() as store:
            changed = store.set_status(tenant_ref, status)
        _show_tenant(changed, as_json)


_status_command("suspend", "suspended", "Suspend a tenant: its keys are refused (403) within the auth cache TTL.")
_status_command("resume", "active", "Make a suspended tenant active again.")


# ---- keys --------------------------------------------------------------------------------

KEY_COLUMNS = ["id", "tenant_id", "key_prefix", "name", "state", "created_at", "expires_at"]


def _key_created(key: ApiKey, token: str, as_json: bool, **extra: Any) -> None:
    data = {**key.to_json(), "token": token, **extra}

    def human() -> None:
        click.echo(f"key id:  {key.id}\ntenant:  {key.tenant_id}\ntoken:   {token}")
        click.echo("Store the token now: it is shown once and kept only as a hash.")

    _emit(data, as_json, human)


@main.group()
def key() -> None:
    """Create and manage gateway tokens."""


@key.command("create")
@click.argument("tenant_ref", metavar="TENANT")
@click.option("--name", default=None, help="A label for the key.")
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None)
@json_option
def key_create(tenant_ref: str, name: str | None, expires_in_days: float | None, as_json: bool) -> None:
    """Create a gateway token for a tenant (printed once)."""
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with _store() as store:
        created, token = store.create_key(tenant_ref, name=name, expires_at=expires_at)
    _key_created(created, token, as_json)


@key.command("list")
@click.option("--tenant", "tenant_ref", default=None, help="Only this tenant's keys.")
@json_option
def key_list(tenant_ref: str | None, as_json: bool) -> None:
    """List keys (never the tokens)."""
    with _store() as store:
        keys = [k.to_json() for k in store.list_keys(tenant_ref)]
    _emit(keys, as_json, lambda: _table(keys, KEY_COLUMNS))


@key.command("revoke")
@click.argument("key_id")
@json_option
def key_revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key: refused (401) within the auth cache TTL."""
    with _store() as store:
        revoked = store.revoke_key(key_id)
    _emit(revoked.to_json(), as_json, lambda: click.echo(f"revoked {revoked.id}"))


@key.command("rotate")
@click.argument("key_id")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True)
@json_option
def key_rotate(key_id: str, grace_hours: float, as_json: bool) -> None:
    """Issue a new key for the same tenant; the old one expires after the grace period."""
    with _store() as store:
        new_key, token, old = store.rotate_key(key_id, grace=timedelta(hours=grace_hours))
    _key_created(new_key, token, as_json, replaces=old.id, old_key_expires_at=old.to_json()["expires_at"])


# ---- usage -------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@main.group()
def usage() -> None:
    """Usage reports and replays."""


@usage.command("report")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant id or name.")
@click.option("--from", "start", type=click.DateTime(), required=True, help="Start (UTC), inclusive.")
@click.option("--to", "end", type=click.DateTime(), required=True, help="End (UTC), exclusive.")
@json_option
def usage_report(tenant_ref: str, start: datetime, end: datetime, as_json: bool) -> None:
    """Per-model usage and cost for one tenant over [from, to)."""
    from billingproxy import queries

    start, end = _utc(start), _utc(end)
    if end <= start:
        raise click.ClickException("--to must be after --from")
    with _store() as store:
        found = store.get_tenant(tenant_ref)
        rows = queries.tenant_breakdown(store.conn, found.id, start, end)
    total = sum((row["cost_usd"] for row in rows), start=Decimal(0))
    data = {
        "tenant_id": found.id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "models": rows,
        "total_cost_usd": str(total),
    }

    def human() -> None:
        click.echo(f"{found.name} ({found.id})  {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
        _table(
            rows, ["model", "requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"]
        )
        click.echo(f"total cost: {total} USD")

    _emit(data, as_json, human)


@usage.command("replay")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def usage_replay(files: tuple[str, ...]) -> None:
    """Ingest spill files or exported JSON log lines; records already stored are skipped."""
    from billingproxy.replay import replay_files
    from billingproxy.settings import database_url

    try:
        read, inserted = replay_files(database_url(), [Path(f) for f in files])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"read {read} records, inserted {inserted}, skipped {read - inserted} already stored")


# ---- stripe ------------------------------------------------------------------------------


@main.group("stripe")
def stripe_group() -> None:
    """Metered billing: relay the outbox to the billing sink, reconcile with Stripe."""


@stripe_group.command("relay")
@click.option("--loop", is_flag=True, help="Keep running (else one pass, for a Cloud Run job).")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds between passes."
)
@json_option
def stripe_relay(loop: bool, interval: float, as_json: bool) -> None:
    """Seal closed usage windows into outbox entries and post them, exactly once."""
    from billingproxy.relay import Relay
    from billingproxy.settings import BillingSettings, database_url
    from billingproxy.sinks import make_sink

    settings = BillingSettings.from_env()
    relay = Relay(database_url(), make_sink(settings), settings)
    if loop:
        from billingproxy.shutdown import stop_event_on_signals

        relay.run_forever(interval, stop_event_on_signals())
        return
    stats = relay.run_once()
    _emit(stats.to_json(), as_json, lambda: click.echo(" ".join(f"{k}={v}" for k, v in stats.to_json().items())))
    if stats.deferred or stats.failed:
        raise SystemExit(3)  # the job shows as failed in Cloud Run; the entries wait for the next pass


@stripe_group.command("reconcile")
@click.option("--from", "start", type=click.DateTime(), required=True, help="Start (UTC), widened to the hour.")
@click.option("--to", "end", type=click.DateTime(), required=True, help="End (UTC), widened to the hour.")
@click.option("--customer", default=None, help="Only this Stripe customer.")
@click.option("--fix", is_flag=True, help="Post missing amounts; cancel our over-reports made in the last 24 h.")
@json_option
def stripe_reconcile(start: datetime, end: datetime, customer: str | None, fix: bool, as_json: bool) -> None:
    """Compare the database's totals with Stripe's meter event summaries per customer and hour."""
    from billingproxy.reconcile import Reconciler
    from billingproxy.settings import BillingSettings, database_url
    from billingproxy.sinks import stripe_client

    start, end = _utc(start), _utc(end)
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
        _table(rows, ["customer_id", "meter", "hour", "expected", "reported", "difference", "action"])

    _emit(rows, as_json, human)
    if differences and not fix:
        raise SystemExit(4)


# ---- services ----------------------------------------------------------------------------


@main.command("service")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: $PORT or 4001.")
def service(host: str, port: int | None) -> None:
    """Run the billing service (admin API, Stripe webhooks)."""
    import os

    import uvicorn

    from billingproxy.service import create_app

    uvicorn.run(create_app(), host=host, port=port or int(os.environ.get("PORT", "4001")), log_level="warning")


from billingproxy.console.cli import portal  # noqa: E402 - it imports this module's helpers

main.add_command(portal)


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)
