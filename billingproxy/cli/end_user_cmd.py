"""``end-user``: per-end-user budgets, overriding the tenant's end-user default."""

from __future__ import annotations

import click

from billingproxy.cli.output import emit, json_option, show_fields, table, tenant_store
from billingproxy.tenants import BUDGET_PERIODS

__all__ = ["command"]

COLUMNS = ["tenant_id", "end_user", "budget_usd", "budget_period", "updated_at"]


@click.group("end-user")
def command() -> None:
    """Budgets of a tenant's end users (the request's `user`, Anthropic metadata.user_id or header)."""


@command.command("set")
@click.argument("tenant_ref", metavar="TENANT")
@click.argument("end_user")
@click.option("--budget-usd", required=True, help="This end user's budget in USD, or 'none' for no budget.")
@click.option("--budget-period", type=click.Choice(BUDGET_PERIODS), default=None, help="Default: the tenant's.")
@json_option
def end_user_set(tenant_ref: str, end_user: str, budget_usd: str, budget_period: str | None, as_json: bool) -> None:
    """Give one end user its own budget; every proxy instance applies it within a second."""
    with tenant_store() as store:
        budget = None if budget_usd.lower() == "none" else budget_usd
        saved = store.set_end_user_budget(tenant_ref, end_user, budget_usd=budget, budget_period=budget_period)
    show_fields(saved.to_json(), as_json)


@command.command("clear")
@click.argument("tenant_ref", metavar="TENANT")
@click.argument("end_user")
def end_user_clear(tenant_ref: str, end_user: str) -> None:
    """Remove an end user's override: the tenant's default applies again."""
    with tenant_store() as store:
        removed = store.clear_end_user_budget(tenant_ref, end_user)
    click.echo(f"{end_user}: {'override removed' if removed else 'had no override'}")


@command.command("list")
@click.argument("tenant_ref", metavar="TENANT")
@json_option
def end_user_list(tenant_ref: str, as_json: bool) -> None:
    """List a tenant's end-user overrides."""
    with tenant_store() as store:
        rows = [b.to_json() for b in store.list_end_user_budgets(tenant_ref)]
    emit(rows, as_json, lambda: table(rows, COLUMNS))
