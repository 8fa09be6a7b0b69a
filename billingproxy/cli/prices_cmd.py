"""``prices``: the price book (dated versions per model) and re-rating; ``ratecard``: per-tenant prices."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from billingproxy import db
from billingproxy.cli.output import emit, json_option, table
from billingproxy.prices import PriceStore, config_models, parse_instant, price_listing
from billingproxy.prices.rerate import rerate

__all__ = ["command", "ratecard_command"]

LIST_COLUMNS = [
    "model",
    "status",
    "id",
    "effective_from",
    "input_per_mtok",
    "output_per_mtok",
    "cached_read_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "long_context_threshold",
]
# Audio and image prices only where a version has one (most models have none: billed as input/output).
MODALITY_COLUMNS = ["input_audio_per_mtok", "output_audio_per_mtok", "input_image_per_mtok"]
HISTORY_COLUMNS = [c for c in LIST_COLUMNS if c not in ("model", "status")] + ["created_by", "reason"]


def _columns(rows: list[dict], columns: list[str]) -> list[str]:
    return columns + [c for c in MODALITY_COLUMNS if any(r.get(c) is not None for r in rows)]


CARD_COLUMNS = [
    "id",
    "model",
    "multiplier",
    "input_per_mtok",
    "output_per_mtok",
    "cached_read_per_mtok",
    "cache_write_5m_per_mtok",
    "valid_from",
    "valid_until",
]


@click.group("prices")
def command() -> None:
    """Price versions per model (USD per million tokens) and re-rating."""


@command.command("list")
@click.option("--model", default=None, help="Only this model.")
@click.option("--at", "at", default=None, help="The instant (ISO 8601; default now).")
@json_option
def prices_list(model: str | None, at: str | None, as_json: bool) -> None:
    """The price in force per model; configured models without one show as unpriced."""
    instant = parse_instant(at, "--at") if at else datetime.now(UTC)
    models = config_models()
    with db.connect() as conn:
        rows = price_listing(PriceStore(conn), models, instant, model)
    emit(rows, as_json, lambda: table(rows, _columns(rows, LIST_COLUMNS)))


@command.command("history")
@click.argument("model")
@json_option
def prices_history(model: str, as_json: bool) -> None:
    """Every version of a model, oldest first."""
    with db.connect() as conn:
        rows = [v.to_json() for v in PriceStore(conn).versions(model)]
    columns = _columns(rows, HISTORY_COLUMNS)
    emit(rows, as_json, lambda: table(rows, columns) if rows else click.echo(f"{model}: no price versions"))


@command.command("set")
@click.argument("model")
@click.option("--input-per-mtok", required=True, help="USD per million input tokens (exact decimal).")
@click.option("--output-per-mtok", required=True, help="USD per million output tokens.")
@click.option("--cached-read-per-mtok", default=None, help="Cached prompt tokens (default: the input price).")
@click.option("--cache-write-per-mtok", default=None, help="5-minute cache writes (default: 1.25 x input).")
@click.option("--cache-write-1h-per-mtok", default=None, help="1-hour cache writes (default: 2 x input).")
@click.option("--reasoning-per-mtok", default=None, help="Reasoning tokens, if priced apart from output.")
@click.option("--long-context-threshold", type=int, default=None, help="Prompt tokens above which the tier applies.")
@click.option("--long-input-per-mtok", default=None, help="Input price above the threshold.")
@click.option("--long-output-per-mtok", default=None, help="Output price above the threshold.")
@click.option("--input-audio-per-mtok", default=None, help="Input audio tokens (default: the input price).")
@click.option("--output-audio-per-mtok", default=None, help="Output audio tokens (default: the output price).")
@click.option("--input-image-per-mtok", default=None, help="Input image tokens (default: the input price).")
@click.option("--effective-at", required=True, help="When the version takes effect (ISO 8601).")
@click.option("--reason", default=None, help="Why (kept with the version).")
@json_option
def prices_set(model: str, effective_at: str, reason: str | None, as_json: bool, **price_options: str | None) -> None:
    """Add a price version for MODEL from --effective-at on (history is never overwritten)."""
    with db.connect() as conn:
        version = PriceStore(conn).set_price(
            model,
            effective_at=parse_instant(effective_at, "--effective-at"),
            reason=reason,
            source="cli",
            created_by="cli",
            **price_options,
        )
    data = version.to_json()
    emit(data, as_json, lambda: click.echo(f"price version {version.id} for {model} from {data['effective_from']}"))


@command.command("rerate")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant id or name.")
@click.option("--from", "period_from", required=True, help="Start (ISO 8601 date or time, UTC).")
@click.option("--to", "period_to", required=True, help="End, exclusive.")
@click.option("--apply", "apply_", is_flag=True, help="Update the rows and send the difference (default: dry run).")
@json_option
def prices_rerate(tenant_ref: str, period_from: str, period_to: str, apply_: bool, as_json: bool) -> None:
    """Price a tenant's rows again with the current versions and rate cards."""
    with db.connect() as conn:
        result = rerate(
            conn, tenant_ref, parse_instant(period_from, "--from"), parse_instant(period_to, "--to"), apply=apply_
        )
    data = result.to_json()

    def human() -> None:
        table(data["models"], ["model", "rows", "changed", "billed_usd", "rerated_usd", "difference_usd"])
        if result.applied and result.difference_usd < 0:
            # Stripe meter events must be positive: a decrease cannot be sent as such.
            click.echo(
                f"applied (audit {result.audit_id}): {data['difference_usd']} USD; nothing is sent now: "
                "the decrease is carried against the tenant's next usage (billing_carry)"
            )
        elif result.applied:
            click.echo(f"applied (audit {result.audit_id}): {data['difference_usd']} USD goes out with the next relay")
        else:
            click.echo("dry run: nothing changed" if not apply_ else "nothing to re-rate")

    emit(data, as_json, human)


@click.group("ratecard")
def ratecard_command() -> None:
    """Per-tenant rate cards: a multiplier or fixed prices, for one model or all."""


@ratecard_command.command("set")
@click.argument("tenant")
@click.argument("model", required=False)
@click.option("--multiplier", default=None, help="Times the list price (e.g. 1.2).")
@click.option("--input-per-mtok", default=None)
@click.option("--output-per-mtok", default=None)
@click.option("--cached-read-per-mtok", default=None)
@click.option("--cache-write-per-mtok", default=None, help="5-minute cache writes.")
@click.option("--cache-write-1h-per-mtok", default=None, help="1-hour cache writes.")
@click.option("--input-audio-per-mtok", default=None, help="Input audio tokens.")
@click.option("--output-audio-per-mtok", default=None, help="Output audio tokens.")
@click.option("--input-image-per-mtok", default=None, help="Input image tokens.")
@click.option("--from", "valid_from", required=True, help="Start (ISO 8601).")
@click.option("--until", "valid_until", default=None, help="End, exclusive (ISO 8601; default open).")
@click.option("--reason", default=None)
@json_option
def ratecard_set(
    tenant: str,
    model: str | None,
    multiplier: str | None,
    valid_from: str,
    valid_until: str | None,
    reason: str | None,
    as_json: bool,
    **prices: str | None,
) -> None:
    """Give TENANT its own prices for MODEL (or every model)."""
    fixed = {
        "input": prices["input_per_mtok"],
        "output": prices["output_per_mtok"],
        "cached_read": prices["cached_read_per_mtok"],
        "cache_write_5m": prices["cache_write_per_mtok"],
        "cache_write_1h": prices["cache_write_1h_per_mtok"],
        "input_audio": prices["input_audio_per_mtok"],
        "output_audio": prices["output_audio_per_mtok"],
        "input_image": prices["input_image_per_mtok"],
    }
    with db.connect() as conn:
        card = PriceStore(conn).set_rate_card(
            tenant,
            model,
            valid_from=parse_instant(valid_from, "--from"),
            valid_until=parse_instant(valid_until, "--until") if valid_until else None,
            multiplier=multiplier,
            fixed=fixed,
            reason=reason,
        )
    data = card.to_json()
    emit(data, as_json, lambda: click.echo(f"rate card {card.id} for {card.tenant_id} ({model or 'all models'})"))


@ratecard_command.command("list")
@click.argument("tenant")
@json_option
def ratecard_list(tenant: str, as_json: bool) -> None:
    """A tenant's rate cards."""
    from billingproxy.tenants import TenantStore

    with db.connect() as conn:
        found = TenantStore(conn).get_tenant(tenant)
        rows = [c.to_json() for c in PriceStore(conn).rate_cards(found.id)]
    emit(rows, as_json, lambda: table(rows, _columns(rows, CARD_COLUMNS)))
