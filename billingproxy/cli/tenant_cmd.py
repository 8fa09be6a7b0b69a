"""``tenant``: create and manage tenants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from billingproxy.budgets import period_status
from billingproxy.cli.output import emit, json_option, show_fields, table, tenant_store
from billingproxy.errors import InvalidInput
from billingproxy.prices import PriceStore
from billingproxy.tenants import BUDGET_PERIODS, DEFAULT_PERIOD, UNSET, Tenant, period_start

__all__ = ["command"]

TENANT_COLUMNS = ["id", "name", "status", "allowed_models", "budget_usd", "budget_period", "rpm_limit", "tpm_limit"]
_CLEAR = "none"


def _show_tenant(tenant: Tenant, as_json: bool) -> None:
    show_fields(tenant.to_json(), as_json)


def _optional(value: str | None, parse: Callable[[str], Any] = str) -> Any:
    """CLI value → store argument: omitted keeps, 'none' clears."""
    if value is None:
        return UNSET
    return None if value.lower() == _CLEAR else parse(value)


def optional_value(value: str | None) -> Any:
    return _optional(value)


def optional_int(value: str | None) -> Any:
    return _optional(value, _int)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"expected a whole number or 'none', got {value!r}") from None


@click.group("tenant")
def command() -> None:
    """Create and manage tenants."""


@command.command("create")
@click.argument("name")
@click.option("--budget-usd", default=None, help="Budget per period in USD (omit for none).")
@click.option("--budget-period", type=click.Choice(BUDGET_PERIODS), default=DEFAULT_PERIOD)
@click.option("--models", default=None, help="Comma-separated allowed models (omit for all).")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option("--stripe-customer", default=None, help="Stripe customer id (cus_…).")
@json_option
def tenant_create(name, budget_usd, budget_period, models, rpm, tpm, stripe_customer, as_json) -> None:
    """Create a tenant."""
    with tenant_store() as store:
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


@command.command("list")
@json_option
def tenant_list(as_json: bool) -> None:
    """List tenants."""
    with tenant_store() as store:
        tenants = [t.to_json() for t in store.list_tenants()]
    emit(tenants, as_json, lambda: table(tenants, TENANT_COLUMNS))


@command.command("show")
@click.argument("tenant_ref", metavar="TENANT")
@json_option
def tenant_show(tenant_ref: str, as_json: bool) -> None:
    """Show one tenant (by id or name) with its spend, reserved and remaining budget this period."""
    with tenant_store() as store:
        found = store.get_tenant(tenant_ref)
        status = period_status(store.conn, found.id, period_start(found.budget_period), found.budget_usd)
    show_fields({**found.to_json(), **{k: v if v is None else str(v) for k, v in status.items()}}, as_json)


@command.command("update")
@click.argument("tenant_ref", metavar="TENANT")
@click.option("--name", default=None)
@click.option("--budget-usd", default=None, help="New budget in USD, or 'none' to remove it.")
@click.option("--budget-period", type=click.Choice(BUDGET_PERIODS), default=None)
@click.option("--models", default=None, help="Comma-separated allowed models; '' allows all.")
@click.option("--rpm", default=None, help="Requests per minute, or 'none'.")
@click.option("--tpm", default=None, help="Tokens per minute, or 'none'.")
@click.option("--stripe-customer", default=None, help="Stripe customer id, or 'none'.")
@click.option(
    "--price-multiplier", default=None, help="Markup from now on, e.g. 1.2: an all-models rate card (see ratecard)."
)
@click.option("--end-user-budget-usd", default=None, help="Every end user's budget in USD, or 'none'.")
@click.option("--end-user-budget-period", type=click.Choice(BUDGET_PERIODS), default=None)
@json_option
def tenant_update(
    tenant_ref,
    name,
    budget_usd,
    budget_period,
    models,
    rpm,
    tpm,
    stripe_customer,
    price_multiplier,
    end_user_budget_usd,
    end_user_budget_period,
    as_json,
) -> None:
    """Change a tenant's settings; omitted options stay as they are."""
    with tenant_store() as store:
        if price_multiplier is not None:
            # The single markup is a rate card now (the price book prices each row with it).
            PriceStore(store.conn).set_rate_card(
                tenant_ref, None, valid_from=datetime.now(UTC), multiplier=price_multiplier, reason="tenant update"
            )
        updated = store.update_tenant(
            tenant_ref,
            name=name,
            models=models,
            budget_usd=_optional(budget_usd),
            budget_period=budget_period,
            rpm_limit=_optional(rpm, _int),
            tpm_limit=_optional(tpm, _int),
            stripe_customer_id=_optional(stripe_customer),
            end_user_budget_usd=_optional(end_user_budget_usd),
            end_user_budget_period=end_user_budget_period,
        )
    _show_tenant(updated, as_json)


def _status_command(name: str, status: str, help_text: str) -> None:
    @command.command(name, help=help_text)
    @click.argument("tenant_ref", metavar="TENANT")
    @json_option
    def status_command(tenant_ref: str, as_json: bool) -> None:
        with tenant_store() as store:
            changed = store.set_status(tenant_ref, status)
        _show_tenant(changed, as_json)


_status_command(
    "suspend", "suspended", "Suspend a tenant: its keys are refused (403) by every instance within a second."
)
_status_command("resume", "active", "Make a suspended tenant active again.")
