"""Budgets that hold under concurrency and across instances, per tenant, key and end user.

Each budget has a *scope* (billingproxy.budgets.scopes): a tenant id, ``key:…`` or
``end_user:…``; the manager and the stores treat every scope alike (``tenant_id`` fields hold it).
A request that several budgets apply to reserves at each (``reserve_levels``): all or none.

Before the upstream call a request reserves its *maximum possible cost*; when it ends the
reservation is settled to the real cost (or released on failure). Reservations come from a
slice of the tenant's remaining budget that this instance leased from the shared store, so the
common case costs no I/O; the store is asked again only when the slice runs out. Slices are a
fraction of what remains, so they shrink near the end of the budget, down to one request.

Invariant: the store grants a slice only from ``budget - spent - slices held by everyone``, and
a request is admitted only against a slice, so admitted maximum costs never exceed the budget.

*Spent* has one source, the usage ledger: what the rollups of the written rows say, plus what
each live holder has settled and not yet seen written (``pending``, part of what it holds). A
settled request's cost stays in its holder's lease until the writer reports its row committed
(``written``), then it is in the rollups; so nothing is counted in neither place.

A dead holder's unwritten spend and requests in flight are the only spend that can go missing,
so a lease that expires unreleased (its holder was killed) stays *in doubt*, whole (the store
cannot tell what of the slice was reserved since the last report): counted as spent until
``usage audit`` has put that holder's requests on the ledger (billingproxy.budgets.doubt), or for
30 minutes. A holder that exits normally releases its leases after its last rows are written
(``closing_reports``, the store's ``release``), so a deploy leaves nothing in doubt.

A request refused while other instances hold enough *calls their slices in* (``call_in``, a
message to every instance): each holder hands back what its requests in flight have not
reserved, and the refused request asks again for up to ``call_in_wait_s`` before it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from billingproxy.budgets.scopes import parse_scope
from billingproxy.errors import BillingProxyError, Unavailable
from billingproxy.metering import ZERO
from billingproxy.tenants import period_start

__all__ = [
    "THRESHOLDS",
    "BudgetExceeded",
    "BudgetManager",
    "BudgetStore",
    "BudgetStoreUnavailable",
    "Grant",
    "Report",
    "Reservation",
    "crossed_thresholds",
]

log = logging.getLogger("billingproxy.budget")

THRESHOLDS = (50, 80, 100)
LEASE_MARGIN_S = 2.0  # a lease older than its TTL minus this is treated as expired
REFUSAL_MEMO_S = 0.05  # after the store refused a slice, refuse locally for this long
CALL_IN_POLL_S = 0.025  # a refused request that called slices in asks the store again this often
# A grant refused only for our own unwritten spend is asked again after this: long enough for the
# writer's notices of rows it committed meanwhile (a commit takes a few ms) to reach the loop.
OWN_WRITES_S = 0.025
CALL_IN_MEMO_S = 1.0  # a call-in that freed nothing is not repeated for this scope this soon
# An idle lease (nothing settled, nothing changed) is renewed this often, not every flush: with a
# lease per end user, reporting all of them every second would grow with the end users seen.
# Never less often than half the time a lease is surely alive (BudgetManager.renew_idle_s).
RENEW_IDLE_S = 20.0


# ---- the shared store --------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    granted: Decimal  # the new unreserved slice for this holder (0: refused)
    spent: Decimal
    budget: Decimal
    others: Decimal = ZERO  # what the other holders hold (reserved and unreserved)

    @property
    def ok(self) -> bool:
        return self.granted > 0


@dataclass
class Report:
    """What one holder tells the store about one tenant-period."""

    tenant_id: str
    period_start: datetime
    budget: Decimal
    holding: Decimal  # what the holder still keeps: unreserved, reserved and pending
    pending: Decimal = ZERO  # settled here, its row not written yet: spend, not a slice to hand back


class BudgetStore(Protocol):
    async def acquire(self, holder: str, report: Report, kept: Decimal, want: Decimal, need: Decimal) -> Grant:
        """A new slice of at least ``need`` (up to ``want``) on top of ``kept`` (what the holder
        keeps: reserved and pending), if the budget has room; the holder's lease is set to both."""
        ...

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        """Apply reports; returns (tenant, threshold %, spent) for thresholds newly crossed."""
        ...

    async def release(self, holder: str, reports: list[Report]) -> None:
        """End these leases now (exit); what each report still holds (rows not written, requests
        never settled) stays in doubt, the rest of the slice is free at once."""
        ...


# ---- this instance's view ----------------------------------------------------------------


@dataclass
class Lease:
    tenant_id: str
    period_start: datetime
    budget: Decimal
    available: Decimal = ZERO  # leased, not reserved
    reserved: Decimal = ZERO  # held by requests in flight
    pending: Decimal = ZERO  # settled, its row not yet in the ledger (the usage rollups)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)  # last reservation or settlement
    refused_until: float = 0.0  # the store just refused a slice: refuse without asking again until then
    refused_need: Decimal = ZERO  # ... for requests needing at least this much (a smaller one may ask)
    told_holding: Decimal = ZERO  # what the store last recorded this holder as holding
    told_at: float = 0.0  # monotonic time before the last store call that renewed this lease
    called_in_until: float = 0.0  # a call-in for this scope freed nothing: none again until then
    # Rows of ours reached the ledger since the last report: the next flush reports (thresholds are
    # checked on the ledger in reports), even when a refill already told the store the new holding.
    ledger_grew: bool = False


def _take_report(lease: Lease) -> Report:
    """Snapshot for the store (no await in between)."""
    return Report(
        lease.tenant_id,
        lease.period_start,
        lease.budget,
        _holding(lease),
        max(lease.pending, ZERO),
    )


def _holding(lease: Lease) -> Decimal:
    """What the store must count this holder as holding. A request that cost more than it
    reserved (a price changed mid-request, an estimate) leaves ``available`` below zero: that
    debt is already spend in ``pending``, not a negative slice."""
    return max(lease.available, ZERO) + lease.reserved + max(lease.pending, ZERO)


@dataclass(frozen=True)
class Reservation:
    request_id: str
    lease: Lease
    amount: Decimal
    created: float
    others: tuple[Lease, ...] = ()  # the request's other levels, each holding the same amount

    @property
    def leases(self) -> tuple[Lease, ...]:
        return (self.lease, *self.others)


class BudgetStoreUnavailable(Unavailable):
    """The shared store could not be reached to refill a slice."""


_WHOSE = {"tenant": "", "key": "key's ", "end_user": "end user's "}


class BudgetExceeded(BillingProxyError):
    def __init__(self, tenant_id: str, budget: Decimal, period: str, level: str = "tenant") -> None:
        whose = _WHOSE.get(level, "")
        super().__init__(
            f"Budget exceeded: the {whose}{period} budget of {budget} USD has no room left for this request."
        )
        self.tenant_id = tenant_id  # the scope
        self.level = level
        self.period = period


class BudgetManager:
    def __init__(
        self,
        store: BudgetStore,
        holder: str,
        *,
        slice_fraction: Decimal = Decimal("0.1"),
        reservation_timeout_s: float = 1800,
        on_threshold: Callable[[str, int, Decimal], Awaitable[None]] | None = None,
        idle_s: float = 5.0,
        call_in: Callable[[str, datetime], Awaitable[None]] | None = None,
        call_in_wait_s: float = 0.3,
    ) -> None:
        self.on_threshold = on_threshold  # optional: told of every threshold crossing (a webhook)
        self.store = store
        self.holder = holder
        self.slice_fraction = slice_fraction
        self.reservation_timeout_s = reservation_timeout_s
        self._leases: dict[tuple[str, datetime], Lease] = {}
        self._reservations: dict[str, Reservation] = {}
        # Settled requests whose rows the writer has not committed yet: their leases and cost.
        self._unwritten: dict[str, tuple[tuple[Lease, ...], Decimal]] = {}
        # False when no writer will call ``written`` (usage rows off): settled spend stays pending,
        # the only record of it, and nothing is kept per request.
        self.tracks_writes = True
        self.store_calls = 0
        # A slice nobody here reserved from for this long goes back to the store at the next
        # flush, so a busy instance can use it; draining (SIGTERM) hands every slice back.
        self.idle_s = idle_s
        self.draining = False
        # Asks every other holder of (scope, period start) to hand its unreserved slice back.
        self.call_in = call_in if call_in_wait_s > 0 else None
        self.call_in_wait_s = call_in_wait_s
        self.called_in = 0  # call-ins sent (for tests and benchmarks)
        self._wake = asyncio.Event()  # a call-in from another holder: report now, not at the next tick
        # A slice is spent only while the store's lease on it is surely alive: the store's TTL minus
        # a margin for clock granularity and the call's own time (no TTL known: no limit).
        ttl = getattr(store, "lease_ttl", None)
        self.lease_valid_s = None if ttl is None else max(ttl.total_seconds() - LEASE_MARGIN_S, 0.0)
        self.renew_idle_s = RENEW_IDLE_S if self.lease_valid_s is None else min(RENEW_IDLE_S, self.lease_valid_s / 2)

    # request path

    async def reserve(
        self, request_id: str, tenant_id: str, budget: Decimal, period: str, amount: Decimal
    ) -> Reservation:
        lease, _ = await self._take(tenant_id, budget, period, amount, "tenant")
        reservation = Reservation(request_id, lease, amount, time.monotonic())
        self._reservations[request_id] = reservation
        return reservation

    async def reserve_levels(
        self,
        request_id: str,
        levels: Sequence[tuple[str, str, Decimal, str]],
        amount: Decimal,
        minimum: Decimal | None = None,
    ) -> Reservation | None:
        """Reserve ``amount`` at every level — (level, scope, budget, period) — or at none: when
        one refuses (``BudgetExceeded`` naming its level) the levels taken before are released.
        With ``minimum``, a level with less room left than ``amount`` but at least ``minimum``
        admits what it has, and every level then holds that smaller amount (the reservation's
        ``amount``; the caller bounds the request to it). ``settle`` then settles them all. None
        when no level applies."""
        taken: list[Lease] = []
        current = amount
        try:
            for level, scope, budget, period in levels:
                lease, got = await self._take(scope, budget, period, current, level, minimum)
                for earlier in taken:  # every level holds the same amount: the smallest room
                    earlier.reserved -= current - got
                    earlier.available += current - got
                current = got
                taken.append(lease)
        except BaseException:
            for lease in taken:
                lease.reserved -= current
                lease.available += current
            raise
        if not taken:
            return None
        reservation = Reservation(request_id, taken[0], current, time.monotonic(), tuple(taken[1:]))
        self._reservations[request_id] = reservation
        return reservation

    async def _take(
        self, scope: str, budget: Decimal, period: str, amount: Decimal, level: str, minimum: Decimal | None = None
    ) -> tuple[Lease, Decimal]:
        """Move ``amount`` — or, short of it, as much as there is down to ``minimum`` — from the
        scope's slice to reserved (refilling the slice if short). Returns the lease and the amount."""
        least = amount if minimum is None else min(minimum, amount)
        start = period_start(period)
        lease = self._leases.get((scope, start))
        if lease is None or lease.budget != budget:
            lease = self._leases.setdefault((scope, start), Lease(scope, start, budget))
            lease.budget = budget
            lease.refused_until = 0.0  # a new budget: ask the store again
        if self.lease_valid_s is not None and time.monotonic() - lease.told_at > self.lease_valid_s:
            # The store may have let our lease expire (no renewal got through): the slice may be
            # another instance's by now, so it is not ours to spend until the store grants it again.
            lease.available = ZERO
        if lease.available < amount:  # slow path: one store round trip, one per scope at a time
            async with lease.lock:
                # A burst against a spent budget costs one round trip per REFUSAL_MEMO_S, not one
                # per request (which queued for the pool and turned 429s into 503s).
                memo = time.monotonic() < lease.refused_until and least >= lease.refused_need
                if lease.available < amount and not memo:
                    await self._refill(lease, amount, least)
        taken = min(amount, lease.available)
        if taken < least:
            raise BudgetExceeded(scope, budget, period, level)
        lease.available -= taken
        lease.reserved += taken
        lease.last_used = time.monotonic()
        return lease, taken

    async def _refill(self, lease: Lease, want: Decimal, need: Decimal) -> None:
        """Caller holds ``lease.lock``. Reports settled spend and asks for a new slice: at least
        ``need``, ``want`` or a slice if there is room. Refused while other holders hold enough,
        it calls their slices in and asks again until ``call_in_wait_s`` has passed."""
        want = max(want, (lease.budget * self.slice_fraction).quantize(Decimal("1e-10")))
        grant = await self._ask(lease, want, need)
        now = time.monotonic()
        if (
            grant.ok
            or self.call_in is None
            or not _others_in_the_way(grant, lease, need)
            or now < lease.called_in_until
        ):
            return
        self.called_in += 1
        await self.call_in(lease.tenant_id, lease.period_start)
        deadline = now + self.call_in_wait_s
        while not grant.ok and _others_in_the_way(grant, lease, need) and time.monotonic() < deadline:
            await asyncio.sleep(CALL_IN_POLL_S)  # the holders' hand-backs arrive within a round trip or two
            grant = await self._ask(lease, want, need)
        if not grant.ok:  # busy holders: their slices are reserved; do not make every refusal wait
            lease.called_in_until = time.monotonic() + CALL_IN_MEMO_S

    async def _ask(self, lease: Lease, want: Decimal, need: Decimal) -> Grant:
        grant, pending = await self._ask_once(lease, want, need)
        if grant.ok or pending <= 0 or not self.tracks_writes:
            return grant
        # Rows the writer committed while the store read the ledger are counted twice until their
        # ``written`` reaches us (in the ledger and still in our pending). Refused only because of
        # our own unwritten spend: let those notices arrive and ask once more, so a budget is not
        # refused early (a client sending one request at a time refills on every request).
        if grant.budget - (grant.spent - pending) - grant.others - lease.reserved < need:
            return grant
        await asyncio.sleep(OWN_WRITES_S)
        grant, _ = await self._ask_once(lease, want, need)
        return grant

    async def _ask_once(self, lease: Lease, want: Decimal, need: Decimal) -> tuple[Grant, Decimal]:
        report = _take_report(lease)
        self.store_calls += 1
        asked_at = time.monotonic()
        kept = lease.reserved + report.pending  # what this holder keeps besides the new slice
        grant = await self.store.acquire(self.holder, report, kept, want, need)
        lease.available = grant.granted
        lease.refused_until = 0.0 if grant.ok else time.monotonic() + REFUSAL_MEMO_S
        lease.refused_need = need
        lease.told_holding, lease.told_at = kept + grant.granted, asked_at
        return grant, report.pending

    def hand_over(self, holder: str, scope: str, start: datetime) -> None:
        """Another holder called in (scope, period start): our unreserved slice goes back to the
        store with a report made now (requests in flight keep their reservations)."""
        lease = self._leases.get((scope, start))
        if holder == self.holder or lease is None or lease.available <= 0:
            return
        lease.available = ZERO
        self._wake.set()

    def settle(self, request_id: str, actual: Decimal) -> None:
        """The request ended with cost ``actual`` (0 releases the reservation)."""
        reservation = self._reservations.pop(request_id, None)
        if reservation is None:
            return
        for lease in reservation.leases:
            lease.reserved -= reservation.amount
            lease.pending += actual  # spend until the writer reports its row committed
            lease.available += reservation.amount - actual
            lease.last_used = time.monotonic()
            if self.draining:
                lease.available = ZERO  # nothing more is admitted here: the store gets it back
        if actual > 0 and self.tracks_writes:
            self._unwritten[request_id] = (reservation.leases, actual)

    def written(self, request_ids: Iterable[str]) -> None:
        """The writer committed these requests' rows (inserted, or there already): their cost is in
        the usage rollups now, so it leaves the leases' pending spend. Unknown ids are ignored."""
        for request_id in request_ids:
            entry = self._unwritten.pop(request_id, None)
            if entry is not None:
                leases, actual = entry
                for lease in leases:
                    lease.pending -= actual
                    lease.ledger_grew = True

    # background

    def expire_stale(self) -> int:
        """Release reservations whose request never reported back (crashed handler, lost callback)."""
        cutoff = time.monotonic() - self.reservation_timeout_s
        stale = [rid for rid, r in self._reservations.items() if r.created < cutoff]
        for request_id in stale:
            self.settle(request_id, ZERO)
        return len(stale)

    def _give_back_idle(self) -> None:
        """Unreserved slices of idle leases (all of them when draining) go back with this report:
        the report's ``holding`` is then only what requests in flight hold."""
        cutoff = time.monotonic() - self.idle_s
        for lease in self._leases.values():
            if self.draining or (lease.reserved <= 0 and lease.last_used < cutoff):
                lease.available = ZERO

    async def hand_back(self) -> None:
        """SIGTERM: keep no slice; report now, holding only what requests in flight reserved.
        Their reservations come back as they settle (the background flush keeps reporting)."""
        self.draining = True
        await self.flush()

    def closing_reports(self) -> list[Report]:
        """At exit, once the writer has drained: what each lease the store knows still keeps (spend
        whose row was spilled, not written; requests never settled), for the store to release."""
        for lease in self._leases.values():
            lease.available = ZERO
        return [_take_report(lease) for lease in self._leases.values() if lease.told_at]

    async def flush(self) -> None:
        """Report settled spend and renew slices; announce thresholds crossed (once each)."""
        self.expire_stale()
        self._give_back_idle()
        now = time.monotonic()  # before the report: the store's lease runs from no earlier than this
        leases = [lease for lease in self._leases.values() if _due(lease, now, self.renew_idle_s)]
        if not leases:
            return
        async with contextlib.AsyncExitStack() as stack:
            # Hold every lease's lock: a refill must not interleave with this report.
            for lease in leases:
                await stack.enter_async_context(lease.lock)
            reports = [_take_report(lease) for lease in leases]
            grew = [lease.ledger_grew for lease in leases]
            for lease in leases:  # cleared before the store reads the ledger: a later write sets it again
                lease.ledger_grew = False
            try:
                crossed = await self.store.report(self.holder, reports)
            except BaseException:
                for lease, flag in zip(leases, grew, strict=True):
                    lease.ledger_grew = lease.ledger_grew or flag
                raise
            for lease, report in zip(leases, reports, strict=True):
                lease.told_holding, lease.told_at = report.holding, now
        for tenant_id, threshold, spent in crossed:
            if parse_scope(tenant_id)[0] != "tenant":
                continue  # alerts (log line, webhook) are for tenant budgets only
            log.warning(
                "tenant %s crossed %d%% of its budget (spent %s USD)",
                tenant_id,
                threshold,
                spent,
                extra={"tenant_id": tenant_id, "budget_threshold_pct": threshold, "spent_usd": str(spent)},
            )
            if self.on_threshold is not None:
                await self.on_threshold(tenant_id, threshold, spent)

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # every interval, or at once after a hand-over
                await asyncio.wait_for(self._wake.wait(), interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # keep renewing: a failed report is retried with the next one
                log.warning("budget report failed", exc_info=True)


def _others_in_the_way(grant: Grant, lease: Lease, need: Decimal) -> bool:
    """Refused only because other holders hold slices: without them there would be room.
    (``grant.spent`` counts every holder's pending spend; ``grant.others`` only what they could
    hand back.)"""
    return grant.others > 0 and grant.budget - grant.spent - lease.reserved >= need


def _due(lease: Lease, now: float, renew_idle_s: float) -> bool:
    """Whether the store must hear from this lease now: rows of ours written (thresholds are checked
    on the ledger in reports), a holding that changed (a slice handed back…) or a held slice to renew."""
    holding = _holding(lease)
    if lease.ledger_grew or holding != lease.told_holding:
        return True
    return holding > 0 and now - lease.told_at >= renew_idle_s


def crossed_thresholds(spent: Decimal, budget: Decimal, already: int) -> list[int]:
    """Thresholds (%) reached by ``spent`` and not announced yet (``already`` is the highest announced)."""
    pct = Decimal(100) if budget <= 0 else spent / budget * 100
    return [t for t in THRESHOLDS if already < t <= pct]
