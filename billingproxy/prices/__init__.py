"""The price book: dated price versions per model, per-tenant rate cards, the in-memory schedule
the proxy prices requests from, and re-rating."""

from billingproxy.prices.book import CHANNEL, PriceBook, ReservationPrices, follow
from billingproxy.prices.model import DIMENSIONS, PriceVersion, RateCard, TokenUsage, parse_price, request_cost
from billingproxy.prices.store import (
    PriceStore,
    config_models,
    config_versions,
    import_config_prices,
    parse_instant,
    price_listing,
)

__all__ = [
    "CHANNEL",
    "DIMENSIONS",
    "PriceBook",
    "PriceStore",
    "PriceVersion",
    "RateCard",
    "ReservationPrices",
    "TokenUsage",
    "config_models",
    "config_versions",
    "follow",
    "import_config_prices",
    "parse_instant",
    "parse_price",
    "price_listing",
    "request_cost",
]
