"""``key``: create and manage gateway tokens."""

from __future__ import annotations

from typing import Any

import click

from billingproxy.cli.output import emit, json_option, table, tenant_store
from billingproxy.tenants import ApiKey, expiry_in_days
from billingproxy.tenants import grace_hours as grace_period

__all__ = ["command"]

KEY_COLUMNS = ["id", "tenant_id", "key_prefix", "name", "state", "created_at", "expires_at"]


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
@json_option
def key_create(tenant_ref: str, name: str | None, expires_in_days: float | None, as_json: bool) -> None:
    """Create a gateway token for a tenant (printed once)."""
    with tenant_store() as store:
        created, token = store.create_key(tenant_ref, name=name, expires_at=expiry_in_days(expires_in_days))
    _key_created(created, token, as_json)


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
    """Revoke a key: refused (401) within the auth cache TTL."""
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
