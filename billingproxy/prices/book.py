"""The in-memory price schedule each proxy instance bills from.

The whole schedule (every version and rate card: small tables) is loaded at start and swapped as
one immutable snapshot whenever PostgreSQL announces a change (``LISTEN billingproxy_prices``),
with a periodic poll as the fallback. A request is priced by its *start time*, so an instance that
learned of a change late still bills it right as long as it learned before the effective instant;
the hot path is a dict lookup plus a bisect over a model's few versions, with no I/O.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from billingproxy.db.listen import follow_channel
from billingproxy.metering import ZERO, ModelPrice, RequestDimensions
from billingproxy.prices.model import PriceVersion, RateCard, TokenUsage, bound_prices, effective_prices, priced_cost
from billingproxy.prices.store import _CARD_COLUMNS, _VERSION_COLUMNS, config_versions

__all__ = ["CHANNEL", "PriceBook", "ReservationPrices"]

CHANNEL = "billingproxy_prices"
log = logging.getLogger("billingproxy.prices")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    starts: dict[str, list[float]]  # model -> sorted effective_from (epoch seconds)
    versions: dict[str, list[PriceVersion]]
    cards: dict[str, list[RateCard]]  # tenant -> its cards, newest first
    # (version, card, tier) -> effective prices, filled on first use: the hot path then does no
    # dataclass copies, only the token arithmetic. Keyed by identity: the snapshot owns the objects.
    effective: dict[tuple, object]


def _snapshot(versions: Iterable[PriceVersion], cards: Iterable[RateCard]) -> _Snapshot:
    by_model: dict[str, list[PriceVersion]] = {}
    for v in sorted(versions, key=lambda v: (v.model, v.effective_from)):
        by_model.setdefault(v.model, []).append(v)
    by_tenant: dict[str, list[RateCard]] = {}
    for c in sorted(cards, key=lambda c: (c.valid_from, c.id or 0), reverse=True):
        by_tenant.setdefault(c.tenant_id, []).append(c)
    starts = {m: [v.effective_from.timestamp() for v in vs] for m, vs in by_model.items()}
    return _Snapshot(starts, by_model, by_tenant, {})


class PriceBook:
    def __init__(self, versions: Iterable[PriceVersion] = (), cards: Iterable[RateCard] = ()) -> None:
        self._state = _snapshot(versions, cards)
        self.loaded_at: datetime | None = None
        self.from_database = False

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, path: Path | None = None) -> PriceBook:
        """Provisional prices while the database is unreachable: config.yaml's ``model_info`` as
        ``db migrate`` would import it (every dimension: cache writes, tier, audio / image), with
        no version ids."""
        return cls(config_versions(path))

    def replace(self, versions: Iterable[PriceVersion], cards: Iterable[RateCard]) -> None:
        self._state = _snapshot(versions, cards)  # one reference swap: readers see old or new, whole
        self.loaded_at = datetime.now(UTC)
        self.from_database = True

    def load(self, conn: psycopg.Connection) -> None:
        with conn.cursor(row_factory=dict_row) as cur:
            versions = [PriceVersion.from_row(r) for r in cur.execute(f"SELECT {_VERSION_COLUMNS} FROM price_versions")]
            cards = [RateCard.from_row(r) for r in cur.execute(f"SELECT {_CARD_COLUMNS} FROM rate_cards")]
        self.replace(versions, cards)

    async def load_async(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_VERSION_COLUMNS} FROM price_versions")
            versions = [PriceVersion.from_row(r) for r in await cur.fetchall()]
            await cur.execute(f"SELECT {_CARD_COLUMNS} FROM rate_cards")
            cards = [RateCard.from_row(r) for r in await cur.fetchall()]
        self.replace(versions, cards)

    # ---- the hot path --------------------------------------------------------------------------

    def version_at(self, model: str, at: datetime) -> PriceVersion | None:
        state = self._state
        starts = state.starts.get(model)
        if not starts:
            return None
        index = bisect_right(starts, at.timestamp()) - 1
        return state.versions[model][index] if index >= 0 else None

    def card_at(self, tenant_id: str | None, model: str, at: datetime) -> RateCard | None:
        """The tenant's newest card covering ``at``: one for this model before one for all models."""
        cards = self._state.cards.get(tenant_id) if tenant_id else None
        if not cards:
            return None
        general = None
        for card in cards:
            if card.covers(at):
                if card.model == model:
                    return card
                if card.model is None and general is None:
                    general = card
        return general

    def cost(
        self, model: str, usage: TokenUsage, *, at: datetime, tenant_id: str | None = None
    ) -> tuple[Decimal, int | None]:
        """(billed cost, price version id) of a request that started at ``at``; (0, None) for a
        model without a price (admission refuses those for tenant tokens)."""
        version = self.version_at(model, at)
        if version is None:
            return ZERO, None
        card = self.card_at(tenant_id, model, at)
        threshold = version.long_context_threshold
        key = (id(version), id(card), threshold is not None and usage.prompt > threshold)
        cache = self._state.effective
        prices = cache.get(key)
        if prices is None:
            prices = cache[key] = effective_prices(version, usage.prompt, card)
        return priced_cost(prices, usage), version.id

    def priced(self, model: str, at: datetime | None = None) -> bool:
        return self.version_at(model, at or datetime.now(UTC)) is not None

    def models(self) -> list[str]:
        return sorted(self._state.versions)

    def for_tenant(self, tenant_id: str | None, at: datetime | None = None) -> ReservationPrices:
        return ReservationPrices(self, tenant_id, at or datetime.now(UTC))


class ReservationPrices:
    """What a budget reservation multiplies by: the tenant's dearest effective price per prompt and
    per output token among the dimensions the request can incur (``PriceTable``'s ``get`` shape,
    so ``max_cost`` takes it as it is)."""

    __slots__ = ("_at", "_book", "_tenant_id")

    def __init__(self, book: PriceBook, tenant_id: str | None, at: datetime) -> None:
        self._book, self._tenant_id, self._at = book, tenant_id, at

    def get(self, model: str, dimensions: RequestDimensions | None = None) -> ModelPrice | None:
        """The bound for ``model``; with the request's ``dimensions``, only the prices it can incur."""
        version = self._book.version_at(model, self._at)
        if version is None:
            return None
        card = self._book.card_at(self._tenant_id, model, self._at)
        cache = self._book._state.effective
        threshold = version.long_context_threshold
        if dimensions is not None and threshold is not None and dimensions.prompt_bound is not None:
            # The prompt bound matters only against the threshold: keep the cache small.
            dimensions = replace(dimensions, prompt_bound=threshold + 1 if dimensions.prompt_bound > threshold else 0)
        elif dimensions is not None:
            dimensions = replace(dimensions, prompt_bound=None)
        key = ("bound", id(version), id(card), dimensions)
        bound = cache.get(key)
        if bound is None:
            per_in, per_out = bound_prices(version, card, dimensions)
            bound = cache[key] = ModelPrice(input=per_in, output=per_out, cached_input=per_in)
        return bound


async def follow(book: PriceBook, url: str, poll_s: float) -> None:
    """Keep ``book`` current: reload on every NOTIFY, and every ``poll_s`` seconds regardless."""

    async def reload(conn: psycopg.AsyncConnection) -> None:
        await book.load_async(conn)

    await follow_channel(
        url,
        CHANNEL,
        application_name="billingproxy-prices",
        on_connect=reload,
        on_notify=None,
        after_wait=reload,  # after the first notification, or poll_s seconds without one
        wait_s=poll_s,
        stop_after=1,
        retry_s=min(poll_s, 5),
        log=log,
        down="price book refresh failed: the schedule in memory stays",
    )
