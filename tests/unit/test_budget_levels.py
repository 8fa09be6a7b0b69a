"""Budgets at several levels in one manager (issue 19), auth cache invalidation, level resolution."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from billingproxy.access import Authenticator, TenantLimits, auth_metadata, limits_from_auth
from billingproxy.budgets import BudgetExceeded, BudgetManager, BudgetStoreUnavailable, Grant
from billingproxy.budgets.scopes import end_user_scope, key_scope, parse_scope
from billingproxy.config import AuthSettings
from billingproxy.proxy.admission import budget_levels
from tests.unit.test_auth_cache import TOKEN, Clock, Store, record


class MemoryStore:
    """The BudgetStore contract for one holder: grants from what each scope has left."""

    def __init__(self, budgets: dict[str, Decimal]) -> None:
        self.left = dict(budgets)
        self.calls = 0

    async def acquire(self, holder, report, reserved, want, need) -> Grant:
        self.calls += 1
        free = self.left[report.tenant_id] - reserved
        granted = min(want, free) if free >= need else Decimal(0)
        self.left[report.tenant_id] -= granted
        return Grant(granted=granted, spent=Decimal(0), budget=report.budget)

    async def report(self, holder, reports):
        return []


ONE = Decimal("1")


async def test_a_refusing_level_releases_the_levels_reserved_before_it():
    store = MemoryStore({"end_user:tn_1:alice": Decimal(5), "tn_1": Decimal(0)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal(1))
    levels = [("end_user", "end_user:tn_1:alice", Decimal(5), "daily"), ("tenant", "tn_1", Decimal(5), "monthly")]
    with pytest.raises(BudgetExceeded) as refused:
        await manager.reserve_levels("r1", levels, ONE)
    assert refused.value.level == "tenant" and refused.value.period == "monthly"
    alice = next(lease for lease in manager._leases.values() if lease.tenant_id == "end_user:tn_1:alice")
    assert alice.reserved == 0 and alice.available == 5  # handed back, usable by the next request
    assert "r1" not in manager._reservations


async def test_settle_settles_every_level_with_the_real_cost():
    store = MemoryStore({"key:tn_1:k": Decimal(10), "tn_1": Decimal(10)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal(1))
    levels = [("key", "key:tn_1:k", Decimal(10), "monthly"), ("tenant", "tn_1", Decimal(10), "monthly")]
    reservation = await manager.reserve_levels("r1", levels, Decimal(3))
    assert reservation is not None and len(reservation.leases) == 2
    manager.settle("r1", Decimal("0.5"))
    for lease in reservation.leases:
        assert (lease.reserved, lease.pending, lease.available) == (0, Decimal("0.5"), Decimal("9.5"))
    manager.written(["r1", "unknown"])  # the row is in the ledger now: no longer pending here
    assert [lease.pending for lease in reservation.leases] == [0, 0]
    assert await manager.reserve_levels("r2", [], ONE) is None  # no level applies: nothing reserved


async def test_a_spent_budget_is_not_asked_for_again_at_once():
    store = MemoryStore({"tn_1": Decimal(0)})
    manager = BudgetManager(store, "h")
    for request in ("r1", "r2", "r3"):
        with pytest.raises(BudgetExceeded):
            await manager.reserve_levels(request, [("tenant", "tn_1", Decimal(1), "monthly")], ONE)
    assert store.calls == 1  # the refusal is remembered briefly (REFUSAL_MEMO_S)
    with pytest.raises(BudgetExceeded):  # a new budget asks again
        await manager.reserve_levels("r4", [("tenant", "tn_1", Decimal(2), "monthly")], ONE)
    assert store.calls == 2


def test_levels_narrowest_first_with_the_end_users_override_or_the_tenants_default():
    limits = TenantLimits(
        tenant_id="tn_1", allowed_models=(), budget_usd=Decimal(100), budget_period="monthly", key_id="key_1",
        key_budget_usd=Decimal(10), key_budget_period="daily", end_user_budget_usd=Decimal(5),
        end_user_budget_period="daily",
    )  # fmt: skip
    overrides = {"carol": (Decimal(20), None), "dave": (None, None), "erin": (Decimal(1), "total")}
    assert budget_levels(limits, "alice", overrides) == [
        ("end_user", end_user_scope("tn_1", "alice"), Decimal(5), "daily"),
        ("key", key_scope("tn_1", "key_1"), Decimal(10), "daily"),
        ("tenant", "tn_1", Decimal(100), "monthly"),
    ]
    assert budget_levels(limits, "carol", overrides)[0][2:] == (Decimal(20), "daily")
    assert budget_levels(limits, "erin", overrides)[0][2:] == (Decimal(1), "total")
    assert [level for level, *_ in budget_levels(limits, "dave", overrides)] == ["key", "tenant"]  # no budget
    assert [level for level, *_ in budget_levels(limits, None, overrides)] == ["key", "tenant"]


def test_scopes_round_trip_and_end_users_may_contain_colons():
    assert parse_scope("tn_1") == ("tenant", "tn_1", None)
    assert parse_scope(key_scope("tn_1", "key_2")) == ("key", "tn_1", "key_2")
    assert parse_scope(end_user_scope("tn_1", "urn:user:7")) == ("end_user", "tn_1", "urn:user:7")


def test_key_and_end_user_limits_travel_in_the_auth_metadata():
    found = record(key_budget_usd=Decimal("2.5"), key_budget_period="daily", end_user_budget_usd=Decimal(1))
    limits = limits_from_auth(auth_metadata(found), ())
    assert limits is not None
    assert (limits.key_id, limits.key_budget_usd, limits.key_budget_period) == ("key_1", Decimal("2.5"), "daily")
    assert (limits.end_user_budget_usd, limits.end_user_budget_period) == (Decimal(1), "daily")


async def test_an_announced_change_refetches_that_tenants_keys_only():
    overrides = (("alice", Decimal(3), None),)
    store, clock = Store(record(end_user_overrides=overrides)), Clock()
    auth = Authenticator(
        AuthSettings(cache_ttl_s=10, negative_ttl_s=5), lookup_key=store.lookup, lookup_tenant=store.lookup,
        master_key=None, clock=clock,
    )  # fmt: skip
    await auth.authenticate(TOKEN)
    assert auth.end_user_budgets("tn_1") == {"alice": (Decimal(3), None)}
    await auth.authenticate(TOKEN)
    assert store.calls == 1
    assert auth.invalidate("tn_other") == 0
    await auth.authenticate(TOKEN)
    assert store.calls == 1
    assert auth.invalidate("tn_1") == 1
    await auth.authenticate(TOKEN)
    assert store.calls == 2  # refetched although the TTL has not passed
    store.down = True
    auth.invalidate(None)  # the channel reconnected: everything is refetched, or served stale if the DB is down
    assert (await auth.authenticate(TOKEN)).record is not None


async def test_a_slice_whose_lease_may_have_expired_is_not_spent():
    """The store lets a lease expire after its TTL. A holder that could not renew (the store is
    down) stops spending its slice before then: the store may already have granted it again."""
    store = MemoryStore({"tn_1": Decimal(10)})
    store.lease_ttl = timedelta(seconds=10)
    manager = BudgetManager(store, "h", slice_fraction=Decimal(1))
    assert manager.lease_valid_s == 8.0
    tenant = [("tenant", "tn_1", Decimal(10), "monthly")]
    reservation = await manager.reserve_levels("r1", tenant, ONE)  # leases the whole budget
    lease = reservation.lease
    lease.told_at -= 7.9  # renewed 7.9 s ago: still ours
    await manager.reserve_levels("r2", tenant, ONE)
    assert store.calls == 1  # served from the slice, no store call

    async def down(*args):
        raise BudgetStoreUnavailable("store down")

    store.acquire = store.report = down
    with pytest.raises(BudgetStoreUnavailable):
        await manager.flush()  # the renewal does not get through
    lease.told_at -= 0.2  # 8.1 s since the last renewal that did
    with pytest.raises(BudgetStoreUnavailable):  # fail closed (503), not spend a slice that may be gone
        await manager.reserve_levels("r3", tenant, ONE)


class CountingStore(MemoryStore):
    def __init__(self, budgets: dict[str, Decimal]) -> None:
        super().__init__(budgets)
        self.reported: list[str] = []

    async def report(self, holder, reports):
        self.reported.extend(report.tenant_id for report in reports)
        return []


async def test_flush_reports_only_leases_with_news_and_renews_idle_ones_rarely(monkeypatch):
    from billingproxy.budgets import manager as manager_module

    store = CountingStore({f"end_user:tn_1:u{i}": Decimal(10) for i in range(3)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal("0.5"))
    for i in range(3):
        await manager.reserve_levels(f"r{i}", [("end_user", f"end_user:tn_1:u{i}", Decimal(10), "daily")], ONE)
    # u0 spent: its holding is unchanged (the cost moved from reserved to pending) until its row is
    # written, then reported; u1 settled at 0: holding unchanged; u2 in flight.
    manager.settle("r0", Decimal("0.5"))
    manager.settle("r1", Decimal(0))
    await manager.flush()
    assert store.reported == []
    manager.written(["r0"])
    await manager.flush()
    assert store.reported == ["end_user:tn_1:u0"]
    store.reported.clear()
    await manager.flush()
    assert store.reported == []  # nothing new: the store is not asked
    clock = manager_module.time.monotonic() + manager_module.RENEW_IDLE_S + 1
    monkeypatch.setattr(manager_module.time, "monotonic", lambda: clock)
    await manager.flush()
    assert sorted(store.reported) == [f"end_user:tn_1:u{i}" for i in range(3)]  # held slices renewed


async def test_rows_written_are_reported_even_when_a_refill_already_told_the_store_the_holding():
    """Thresholds are checked on the ledger in reports. A row written, then a refill (which sets
    the store's view of the holding to the new one) before the next flush: that flush still
    reports, or the crossing would never be announced (a sequential client refills every request)."""
    scope = "tn_1"
    store = CountingStore({scope: Decimal(10)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal("0.1"))
    level = [("tenant", scope, Decimal(10), "monthly")]
    await manager.reserve_levels("r0", level, ONE)
    manager.settle("r0", ONE)
    manager.written(["r0"])  # its row is in the ledger now
    await manager.reserve_levels("r1", level, Decimal(2))  # a refill: the store hears the holding
    (lease,) = manager._leases.values()
    assert lease.told_holding == lease.reserved + lease.available  # nothing new by holding alone
    await manager.flush()
    assert store.reported == [scope]
    store.reported.clear()
    await manager.flush()
    assert store.reported == []  # reported once, not every flush


class LedgerStore:
    """One holder, a budget of 10: spend is the ledger plus the holder's pending. The first grant
    reads the ledger just after the writer committed "r0" (its notice not yet delivered), as a
    real store can: that row is counted twice in that answer."""

    def __init__(self) -> None:
        self.ledger = Decimal(0)
        self.manager: BudgetManager | None = None
        self.calls = 0

    async def acquire(self, holder, report, kept, want, need) -> Grant:
        self.calls += 1
        if self.calls == 2:  # the writer commits r0 (6) during this call; its notice comes after
            self.ledger += Decimal(6)
            asyncio.get_running_loop().call_soon(self.manager.written, ["r0"])
        spent = self.ledger + report.pending
        free = Decimal(10) - spent - (kept - report.pending)
        granted = min(want, free) if free >= need else Decimal(0)
        return Grant(granted=granted, spent=spent, budget=Decimal(10))

    async def report(self, holder, reports):
        return []


async def test_a_grant_refused_only_for_rows_committed_during_it_is_asked_again():
    store = LedgerStore()
    manager = store.manager = BudgetManager(store, "h", slice_fraction=Decimal("0.01"))
    level = [("tenant", "tn_1", Decimal(10), "monthly")]
    await manager.reserve_levels("r0", level, Decimal(6))
    manager.settle("r0", Decimal(6))  # pending 6; its row is committed during the next grant
    # 4 are left. Counting r0 in the ledger and in pending, the store sees -2 left and refuses.
    assert await manager.reserve_levels("r1", level, Decimal(4)) is not None
    assert store.calls == 3  # asked again once the writer's notice arrived


async def test_with_a_minimum_every_level_holds_the_smallest_room_left():
    store = MemoryStore({"key:tn_1:k": Decimal(10), "tn_1": Decimal(3)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal(1))
    levels = [("key", "key:tn_1:k", Decimal(10), "monthly"), ("tenant", "tn_1", Decimal(3), "monthly")]
    reservation = await manager.reserve_levels("r1", levels, Decimal(5), minimum=Decimal(1))
    assert reservation.amount == 3  # the tenant had 3 left of the 5 asked for
    assert [(lease.reserved, lease.available) for lease in reservation.leases] == [(3, 7), (3, 0)]
    with pytest.raises(BudgetExceeded):  # nothing left at the tenant level, not even the minimum
        await manager.reserve_levels("r2", levels, Decimal(5), minimum=Decimal(1))
    assert [(lease.reserved, lease.available) for lease in reservation.leases] == [(3, 7), (3, 0)]


async def test_a_refusal_memo_does_not_refuse_a_smaller_request():
    store = MemoryStore({"tn_1": Decimal(3)})
    manager = BudgetManager(store, "h", slice_fraction=Decimal(1))
    tenant = [("tenant", "tn_1", Decimal(3), "monthly")]
    with pytest.raises(BudgetExceeded):
        await manager.reserve_levels("r1", tenant, Decimal(5))  # needs 5: refused, remembered
    reservation = await manager.reserve_levels("r2", tenant, Decimal(5), minimum=Decimal(1))
    assert reservation.amount == 3 and store.calls == 2  # it needs only 1: the store is asked again
