"""The admin API of the price book: ``GET/POST /admin/prices``, ``GET/POST /admin/ratecards``
(master-key protected; the same operations as ``prices`` and ``ratecard`` in the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from billingproxy.prices import PriceStore, config_models, parse_instant, price_listing
from billingproxy.service.admin import Strict
from billingproxy.service.deps import AdminOnly, Store

__all__ = ["router"]

router = APIRouter(prefix="/admin", dependencies=AdminOnly)

Price = str | int | float


class PriceCreate(Strict):
    model: str
    input_per_mtok: Price
    output_per_mtok: Price
    effective_at: str
    cached_read_per_mtok: Price | None = None
    cache_write_per_mtok: Price | None = None
    cache_write_1h_per_mtok: Price | None = None
    reasoning_per_mtok: Price | None = None
    long_context_threshold: int | None = None
    long_input_per_mtok: Price | None = None
    long_output_per_mtok: Price | None = None
    input_audio_per_mtok: Price | None = None
    output_audio_per_mtok: Price | None = None
    input_image_per_mtok: Price | None = None
    reason: str | None = None


class RateCardCreate(Strict):
    tenant: str
    model: str | None = None
    multiplier: Price | None = None
    input_per_mtok: Price | None = None
    output_per_mtok: Price | None = None
    cached_read_per_mtok: Price | None = None
    cache_write_per_mtok: Price | None = None
    cache_write_1h_per_mtok: Price | None = None
    input_audio_per_mtok: Price | None = None
    output_audio_per_mtok: Price | None = None
    input_image_per_mtok: Price | None = None
    valid_from: str
    valid_until: str | None = None
    reason: str | None = None


def _exact(value: Price | None) -> str | None:
    """JSON numbers arrive as floats: their shortest repr is the decimal the client wrote."""
    return None if value is None else (repr(value) if isinstance(value, float) else str(value))


@router.get("/prices")
def list_prices(store: Store, model: str | None = None, at: str | None = None) -> list[dict[str, Any]]:
    instant = parse_instant(at, "at") if at else datetime.now(UTC)
    models = config_models()
    return price_listing(PriceStore(store.conn), models, instant, model)


@router.post("/prices", status_code=201)
def create_price(body: PriceCreate, store: Store) -> dict[str, Any]:
    data = body.model_dump()
    prices = {k: _exact(data.pop(k)) for k in list(data) if k.endswith("_per_mtok")}
    version = PriceStore(store.conn).set_price(
        data["model"],
        effective_at=parse_instant(data["effective_at"], "effective_at"),
        long_context_threshold=data["long_context_threshold"],
        reason=data["reason"],
        source="api",
        created_by="admin api",
        **prices,
    )
    return version.to_json()


@router.get("/ratecards")
def list_rate_cards(store: Store, tenant: str) -> list[dict[str, Any]]:
    found = store.get_tenant(tenant)
    return [c.to_json() for c in PriceStore(store.conn).rate_cards(found.id)]


@router.post("/ratecards", status_code=201)
def create_rate_card(body: RateCardCreate, store: Store) -> dict[str, Any]:
    card = PriceStore(store.conn).set_rate_card(
        body.tenant,
        body.model,
        valid_from=parse_instant(body.valid_from, "valid_from"),
        valid_until=parse_instant(body.valid_until, "valid_until") if body.valid_until else None,
        multiplier=_exact(body.multiplier),
        fixed={
            "input": _exact(body.input_per_mtok),
            "output": _exact(body.output_per_mtok),
            "cached_read": _exact(body.cached_read_per_mtok),
            "cache_write_5m": _exact(body.cache_write_per_mtok),
            "cache_write_1h": _exact(body.cache_write_1h_per_mtok),
            "input_audio": _exact(body.input_audio_per_mtok),
            "output_audio": _exact(body.output_audio_per_mtok),
            "input_image": _exact(body.input_image_per_mtok),
        },
        created_by="admin api",
        reason=body.reason,
    )
    return card.to_json()
