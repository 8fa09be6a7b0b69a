"""``key``: create and manage gateway tokens."""

from __future__ import annotations

from typing import Any

import click

from billingproxy.cli.output import emit, json_option, show_fields, table, tenant_store
from billingproxy.cli.tenant_cmd import optional_int, optional_value
from billingproxy.tenants import BUDGET_PERIODS, ApiKey, expiry_in_days
from billingproxy.tenants import grace_hours as grace_period

__all__ = ["command"]

KEY_COLUMNS = ["id", "tenant_id", "key_prefix", "name", "state", "budget_usd", "rpm_limit", "tpm_limit", "expires_at"]


def _key_created(key: ApiKey, token: str, as_json: bool, **extra: Any) -> None:
    data = {**key.to_json(), "token": token, **extra}

    def human() -> None:
        click.echo(f"key id:  {key.id}\ntenant:  {key.tenant_id}\ntoken:   {token}")
        click.echo("Store the token now: it is shown once and kept only as a hash.")

    emit(data, as_json, human)


@click.group("key")
def command() -> None:
    """Create and manage gateway tokens."""


@command.command("create")
@click.argument("tenant_ref", metavar="TENANT")
@click.option("--name", default=None, help="A label for the key.")
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--budget-usd", default=None, help="The key's own budget per period in USD (on top of the tenant's).")
@click.option("--budget-period", type=click.Choice(BUDGET_PERIODS), default="monthly", show_default=True)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="The key's requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="The key's tokens per minute.")
@click.option("--model-rpm", multiple=True, metavar="MODEL=N", help="The key's requests per minute on one model.")
@click.option("--model-tpm", multiple=True, metavar="MODEL=N", help="The key's tokens per minute on one model.")
@json_option
def key_create(
    tenant_ref: str,
    name: str | None,
    expires_in_days: float | None,
    budget_usd: str | None,
    budget_period: str,
    rpm: int | None,
    tpm: int | None,
    model_rpm: tuple[str, ...],
    model_tpm: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a gateway token for a tenant (printed once)."""
    with tenant_store() as store:
        created, token = store.create_key(
            tenant_ref,
            name=name,
            expires_at=expiry_in_days(expires_in_days),
            budget_usd=budget_usd,
            budget_period=budget_period,
            rpm_limit=rpm,
            tpm_limit=tpm,
            model_rpm=list(model_rpm),
            model_tpm=list(model_tpm),
        )
    _key_created(created, token, as_json)


@command.command("update")
@click.argument("key_id")
@click.option("--budget-usd", default=None, help="The key's budget in USD, or 'none' to remove it.")
@click.option("--budget-period", type=click.Choice(BUDGET_PERIODS), default=None)
@click.option("--rpm", default=None, help="Requests per minute, or 'none'.")
@click.option("--tpm", default=None, help="Tokens per minute, or 'none'.")
@click.option(
    "--model-rpm", multiple=True, metavar="MODEL=N", help="One model's RPM for this key (MODEL=none drops it)."
)
@click.option(
    "--model-tpm", multiple=True, metavar="MODEL=N", help="One model's TPM for this key (MODEL=none drops it)."
)
@json_option
def key_update(key_id: str, budget_usd, budget_period, rpm, tpm, model_rpm, model_tpm, as_json: bool) -> None:
    """Change a key's budget and limits; every proxy instance applies it within a second."""
    with tenant_store() as store:
        updated = store.update_key(
            key_id,
            budget_usd=optional_value(budget_usd),
            budget_period=budget_period,
            rpm_limit=optional_int(rpm),
            tpm_limit=optional_int(tpm),
            model_rpm=list(model_rpm),
            model_tpm=list(model_tpm),
        )
    show_fields(updated.to_json(), as_json)


@command.command("list")
@click.option("--tenant", "tenant_ref", default=None, help="Only this tenant's keys.")
@json_option
def key_list(tenant_ref: str | None, as_json: bool) -> None:
    """List keys (never the tokens)."""
    with tenant_store() as store:
        keys = [k.to_json() for k in store.list_keys(tenant_ref)]
    emit(keys, as_json, lambda: table(keys, KEY_COLUMNS))


@command.command("revoke")
@click.argument("key_id")
@json_option
def key_revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key: refused (401) by every proxy instance within a second."""
    with tenant_store() as store:
        revoked = store.revoke_key(key_id)
    emit(revoked.to_json(), as_json, lambda: click.echo(f"revoked {revoked.id}"))


@command.command("rotate")
@click.argument("key_id")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True)
@json_option
def key_rotate(key_id: str, grace_hours: float, as_json: bool) -> None:
    """Issue a new key for the same tenant; the old one expires after the grace period."""
    with tenant_store() as store:
        new_key, token, old = store.rotate_key(key_id, grace=grace_period(grace_hours))
    _key_created(new_key, token, as_json, replaces=old.id, old_key_expires_at=old.to_json()["expires_at"])
