"""Per-tenant budgets that hold under concurrency and across instances.

Before the upstream call a request reserves its *maximum possible cost*; when it ends the
reservation is settled to the real cost (or released on failure). Reservations come from a
slice of the tenant's remaining budget that this instance leased from the shared store, so the
common case costs no I/O; the store is asked again only when the slice runs out. Slices are a
fraction of what remains, so they shrink near the end of the budget, down to one request.

Invariant: the store grants a slice only from ``budget - spent - slices held by everyone``, and
a request is admitted only against a slice, so admitted maximum costs never exceed the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from billingproxy.pricing import ZERO, PriceTable

log = logging.getLogger("billingproxy.budget")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
THRESHOLDS = (50, 80, 100)


def period_start(period: str, now: datetime | None = None) -> datetime:
    """Start of the budget period holding ``now`` (UTC): calendar month, day, or all time."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "total":
        return EPOCH
    raise ValueError(f"unknown budget period {period!r}")


# ---- the maximum cost of a request -------------------------------------------------------

_TEXT_FIELDS = ("messages", "prompt", "input", "system", "tools", "functions", "instructions")
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def prompt_token_bound(body: dict[str, Any]) -> int:
    """An upper bound on prompt tokens without a tokenizer: every BPE token covers ≥ 1 byte,
    so the UTF-8 size of the prompt-bearing fields (JSON syntax included) bounds it."""
    relevant = {key: body[key] for key in _TEXT_FIELDS if key in body}
    return len(json.dumps(relevant, ensure_ascii=False, default=str).encode()) + 8


def output_token_limit(body: dict[str, Any]) -> int | None:
    for key in OUTPUT_LIMITS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_cost(prices: PriceTable, model: str, body: dict[str, Any], default_max_tokens: int) -> Decimal:
    price = prices.get(model)
    if price is None:
        return ZERO
    output = output_token_limit(body) or default_max_tokens
    return prompt_token_bound(body) * price.input + output * price.output


# ---- the shared store --------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    granted: Decimal  # the new unreserved slice for this holder (0: refused)
    spent: Decimal
    budget: Decimal

    @property
    def ok(self) -> bool:
        return self.granted > 0


@dataclass
class Report:
    """What one holder tells the store about one tenant-period."""

    tenant_id: str
    period_start: datetime
    budget: Decimal
    consumed: Decimal  # settled cost since the last report
    holding: Decimal  # what the holder still keeps (reserved + unreserved)


class BudgetStore(Protocol):
    async def acquire(self, holder: str, report: Report, reserved: Decimal, want: Decimal, need: Decimal) -> Grant: ...

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        """Apply reports; returns (tenant, threshold %, spent) for thresholds newly crossed."""
        ...


# ---- this instance's view ----------------------------------------------------------------


@dataclass
class Lease:
    tenant_id: str
    period_start: datetime
    budget: Decimal
    available: Decimal = ZERO  # leased, not reserved
    reserved: Decimal = ZERO  # held by requests in flight
    consumed: Decimal = ZERO  # settled since the last report
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _take_report(lease: Lease) -> Report:
    """Snapshot for the store; the consumed amount moves into the report (no await in between)."""
    report = Report(lease.tenant_id, lease.period_start, lease.budget, lease.consumed, lease.available + lease.reserved)
    lease.consumed = ZERO
    return report


@dataclass(frozen=True)
class Reservation:
    request_id: str
    lease: Lease
    amount: Decimal
    created: float


class BudgetStoreUnavailable(Exception):
    """The shared store could not be reached to refill a slice."""


class BudgetExceeded(Exception):
    def __init__(self, tenant_id: str, budget: Decimal, period: str) -> None:
        super().__init__(f"Budget exceeded: the {period} budget of {budget} USD has no room left for this request.")
        self.tenant_id = tenant_id


class BudgetManager:
    def __init__(
        self,
        store: BudgetStore,
        holder: str,
        *,
        slice_fraction: Decimal = Decimal("0.1"),
        reservation_timeout_s: float = 1800,
        webhook_url: str | None = None,
    ) -> None:
        self.webhook_url = webhook_url  # optional: told of every threshold crossing
        self.store = store
        self.holder = holder
        self.slice_fraction = slice_fraction
        self.reservation_timeout_s = reservation_timeout_s
        self._leases: dict[tuple[str, datetime], Lease] = {}
        self._reservations: dict[str, Reservation] = {}
        self.store_calls = 0

    # request path

    async def reserve(
        self, request_id: str, tenant_id: str, budget: Decimal, period: str, amount: Decimal
    ) -> Reservation:
        start = period_start(period)
        lease = self._leases.get((tenant_id, start))
        if lease is None or lease.budget != budget:
            lease = self._leases.setdefault((tenant_id, start), Lease(tenant_id, start, budget))
            lease.budget = budget
        if lease.available < amount:  # slow path: one store round trip, one per tenant at a time
            async with lease.lock:
                if lease.available < amount:
                    await self._refill(lease, amount)
        if lease.available < amount:
            raise BudgetExceeded(tenant_id, budget, period)
        lease.available -= amount
        lease.reserved += amount
        reservation = Reservation(request_id, lease, amount, time.monotonic())
        self._reservations[request_id] = reservation
        return reservation

    async def _refill(self, lease: Lease, need: Decimal) -> None:
        """Caller holds ``lease.lock``. Reports settled spend and asks for a new slice."""
        report = _take_report(lease)
        want = max(need, (lease.budget * self.slice_fraction).quantize(Decimal("1e-10")))
        self.store_calls += 1
        try:
            grant = await self.store.acquire(self.holder, report, lease.reserved, want, need)
        except BaseException:
            lease.consumed += report.consumed  # not counted: report it next time
            raise
        lease.available = grant.granted

    def settle(self, request_id: str, actual: Decimal) -> None:
        """The request ended with cost ``actual`` (0 releases the reservation)."""
        reservation = self._reservations.pop(request_id, None)
        if reservation is None:
            return
        lease = reservation.lease
        lease.reserved -= reservation.amount
        lease.consumed += actual
        lease.available += reservation.amount - actual

    # background

    def expire_stale(self) -> int:
        """Release reservations whose request never reported back (crashed handler, lost callback)."""
        cutoff = time.monotonic() - self.reservation_timeout_s
        stale = [rid for rid, r in self._reservations.items() if r.created < cutoff]
        for request_id in stale:
            self.settle(request_id, ZERO)
        return len(stale)

    async def flush(self) -> None:
        """Report settled spend and renew slices; announce thresholds crossed (once each)."""
        self.expire_stale()
        leases = list(self._leases.values())
        if not leases:
            return
        async with contextlib.AsyncExitStack() as stack:
            # Hold every lease's lock: a refill must not interleave with this report.
            for lease in leases:
                await stack.enter_async_context(lease.lock)
            reports = [_take_report(lease) for lease in leases]
            try:
                crossed = await self.store.report(self.holder, reports)
            except BaseException:
                for lease, report in zip(leases, reports, strict=True):
                    lease.consumed += report.consumed
                raise
        for tenant_id, threshold, spent in crossed:
            log.warning(
                "tenant %s crossed %d%% of its budget (spent %s USD)",
                tenant_id,
                threshold,
                spent,
                extra={"tenant_id": tenant_id, "budget_threshold_pct": threshold, "spent_usd": str(spent)},
            )
            if self.webhook_url:
                await self._notify(tenant_id, threshold, spent)

    async def _notify(self, tenant_id: str, threshold: int, spent: Decimal) -> None:
        """POST the crossing to the configured webhook (background task; failures only logged)."""
        import httpx

        event = {"type": "budget.threshold_crossed", "tenant_id": tenant_id, "threshold_pct": threshold}
        event["spent_usd"] = str(spent)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(self.webhook_url, json=event)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("budget webhook failed for tenant %s: %s", tenant_id, exc)

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:  # keep renewing: a failed report is retried with the next one
                log.warning("budget report failed", exc_info=True)


def crossed_thresholds(spent: Decimal, budget: Decimal, already: int) -> list[int]:
    """Thresholds (%) reached by ``spent`` and not announced yet (``already`` is the highest announced)."""
    pct = Decimal(100) if budget <= 0 else spent / budget * 100
    return [t for t in THRESHOLDS if already < t <= pct]
