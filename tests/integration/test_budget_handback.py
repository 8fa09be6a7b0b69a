"""The budget manager hands slices back to the real PostgreSQL store: an idle holder at its next
flush, every holder at SIGTERM (``hand_back``), keeping only what requests in flight reserved;
and when another holder's refused request calls them in (real NOTIFY; PostgreSQL and Redis stores)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from billingproxy.budgets import BudgetExceeded, BudgetManager, PostgresBudgetStore, call_in
from billingproxy.budgets.doubt import release_dead_holders
from billingproxy.budgets.redis_store import RedisBudgetStore
from billingproxy.budgets.spend import derived_spend_query
from billingproxy.metering import COST_QUANTUM, ZERO, UsageRecord, UsageStore
from billingproxy.tenants import period_start
from tests.integration.test_budgets import redis_available


async def held_by(pool: AsyncConnectionPool, tenant: str, holder: str) -> Decimal:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT coalesce(sum(amount), 0) AS held FROM budget_leases WHERE tenant_id = %s AND holder = %s",
            (tenant, holder),
        )
        return Decimal((await cursor.fetchone())["held"])


async def scenario(database_url: str, draining: bool) -> tuple[Decimal, Decimal, Decimal]:
    tenant = f"tn_back_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}) as pool:
        manager = BudgetManager(PostgresBudgetStore(pool), f"holder-{tenant}", idle_s=0.2)
        await manager.reserve("a", tenant, Decimal(10), "monthly", Decimal("0.5"))
        await manager.reserve("b", tenant, Decimal(10), "monthly", Decimal("0.5"))
        manager.settle("a", Decimal("0.1"))
        await manager.flush()
        # The slice (1.0): "a"'s 0.1 is spent, pending until its row is written (never, here).
        busy = await held_by(pool, tenant, manager.holder)
        if draining:
            await manager.hand_back()  # SIGTERM: only "b"'s reservation is still held
            kept = await held_by(pool, tenant, manager.holder)
            manager.settle("b", Decimal("0.1"))
            await manager.flush()
        else:
            manager.settle("b", Decimal("0.1"))
            kept = busy
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # idle for 0.2 s: the next flush gives it back
                await manager.flush()
                if await held_by(pool, tenant, manager.holder) == 0:
                    break
                await asyncio.sleep(0.05)
        return busy, kept, await held_by(pool, tenant, manager.holder)


def test_an_idle_holder_hands_its_slice_back(database_url):
    busy, _, after = asyncio.run(scenario(database_url, draining=False))
    assert busy == Decimal("1.0") and after == Decimal("0.2")  # only the pending spend stays


def test_hand_back_keeps_only_what_requests_in_flight_reserved(database_url):
    busy, kept, after = asyncio.run(scenario(database_url, draining=True))
    assert busy == Decimal("1.0") and kept == Decimal("0.6") and after == Decimal("0.2")


async def held(kind: str, pool: AsyncConnectionPool, scope: str, holder: str) -> Decimal:
    """What the store records ``holder`` as holding of ``scope`` this month."""
    if kind == "postgres":
        return await held_by(pool, scope, holder)
    key = f"billingproxy:budget:{scope}:{int(period_start('monthly').timestamp())}:leases"
    units = redis.Redis(host="127.0.0.1", port=6379).hget(key, holder)
    return Decimal(int(units or 0)) * COST_QUANTUM


def budget_store(kind: str, pool: AsyncConnectionPool):
    if kind == "postgres":
        return PostgresBudgetStore(pool)
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return RedisBudgetStore(aioredis.from_url("redis://127.0.0.1:6379/0"), pool)


async def call_in_scenario(
    database_url: str, wait_s: float, kind: str = "postgres"
) -> tuple[bool, float, Decimal, int]:
    """Holder A keeps an idle slice (idle_s far away); B asks for 95 % of the budget. With call-in
    (real NOTIFY, A's real follower) A hands its slice over and B is admitted within the wait."""
    tenant = f"tn_callin_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        managers = []
        for name in ("a", "b"):
            holder = f"{name}-{tenant}"
            managers.append(
                BudgetManager(
                    budget_store(kind, pool),
                    holder,
                    idle_s=3600,
                    call_in=call_in.publisher(pool, holder),
                    call_in_wait_s=wait_s,
                )
            )
        a, b = managers
        follower = asyncio.create_task(call_in.follow(a, database_url))
        runner = asyncio.create_task(a.run(interval_s=30))  # A reports only when woken by a call-in
        try:
            await a.reserve("a1", tenant, Decimal(10), "monthly", Decimal("0.5"))
            a.settle("a1", Decimal("0.1"))
            await a.flush()
            assert await held(kind, pool, tenant, a.holder) == Decimal("1.0")  # 0.1 of it spent, pending
            # The follower listens once a call-in reaches it: one for another scope first (A's
            # slice of it, 1.0, goes back but for the 0.5 reserved).
            probe = f"probe-{tenant}"
            await a.reserve("p", probe, Decimal(10), "monthly", Decimal("0.5"))
            await a.flush()
            deadline = time.monotonic() + 10
            while await held(kind, pool, probe, a.holder) != Decimal("0.5"):
                assert time.monotonic() < deadline, "the call-in follower never heard a NOTIFY"
                await call_in.publisher(pool, "someone")(probe, period_start("monthly"))
                await asyncio.sleep(0.05)  # poll interval
            started = time.monotonic()
            try:
                await b.reserve("b1", tenant, Decimal(10), "monthly", Decimal("9.5"))
                admitted = True
            except BudgetExceeded:
                admitted = False
            took = time.monotonic() - started
            return admitted, took, await held(kind, pool, tenant, a.holder), b.called_in
        finally:
            follower.cancel()
            runner.cancel()


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_refused_request_calls_idle_slices_in_and_is_admitted(database_url, kind):
    admitted, took, a_holds, calls = asyncio.run(call_in_scenario(database_url, 2.0, kind))
    print(f"admitted after a call-in in {took:.3f} s")
    assert admitted and a_holds == Decimal("0.1") and calls == 1  # A keeps only its pending spend
    assert took < 2.0


def test_without_call_in_the_idle_slice_stays_in_the_way(database_url):
    admitted, _, a_holds, calls = asyncio.run(call_in_scenario(database_url, wait_s=0))
    assert not admitted and a_holds == Decimal("1.0") and calls == 0


async def busy_holder_scenario(database_url: str) -> tuple[float, float, int]:
    """A's slice is all reserved by a request in flight: a call-in frees nothing. B's refusal waits
    out the call-in once; the next refusal within a second does not call in (nor wait) again."""
    tenant = f"tn_busy_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        a = BudgetManager(PostgresBudgetStore(pool), f"a-{tenant}", idle_s=3600)
        b = BudgetManager(
            PostgresBudgetStore(pool), f"b-{tenant}", call_in=call_in.publisher(pool, f"b-{tenant}"), call_in_wait_s=0.3
        )
        follower = asyncio.create_task(call_in.follow(a, database_url))
        try:
            await a.reserve("a1", tenant, Decimal(10), "monthly", Decimal(9))  # in flight: nothing unreserved
            took = []
            for need in (Decimal("1.5"), Decimal("1.2")):  # the second is smaller: not the refusal memo's
                started = time.monotonic()
                try:
                    await b.reserve(f"b-{need}", tenant, Decimal(10), "monthly", need)
                except BudgetExceeded:
                    took.append(time.monotonic() - started)
            assert len(took) == 2, "both must be refused: A's slice is reserved"
            return took[0], took[1], b.called_in
        finally:
            follower.cancel()


def test_a_call_in_that_frees_nothing_is_not_repeated_at_once(database_url):
    first, second, calls = asyncio.run(busy_holder_scenario(database_url))
    print(f"refused after a fruitless call-in in {first:.3f} s, the next refusal in {second:.3f} s")
    assert calls == 1
    assert first >= 0.3 > second


def ledger_row(request_id: str, tenant: str, cost: Decimal) -> UsageRecord:
    now = datetime.now(UTC)
    return UsageRecord.from_json(
        dict(
            request_id=request_id, tenant_id=tenant, api_key_id="key_x", model="gpt-4o-mini",
            model_group="gpt-4o-mini", provider="openai", call_type="acompletion", prompt_tokens=1,
            completion_tokens=1, cached_tokens=0, reasoning_tokens=0, total_tokens=2, cost_usd=cost,
            latency_ms=10, status="success", http_status=200, error_type=None, stream=False, cache_hit=False,
            customer_id=None, trace_id=None, start_time=now, end_time=now, end_user=None, tags=[],
        )
    )  # fmt: skip


async def dead_holder_scenario(database_url: str, kind: str) -> tuple[bool, Decimal]:
    """A settles 4 of a budget of 10, its row reaches the ledger, and A dies before telling the
    store anything more (SIGKILL); B has settled 4 whose row is not written yet. Counting the
    store's reports (B's) or the ledger (A's) alone, the larger is 4 and B could be granted 3
    more; spend from one source (ledger 4 + B's pending 4) leaves 2, so B is refused."""
    tenant = f"tn_ledger_{uuid.uuid4().hex[:10]}"
    budget, start = Decimal(10), period_start("monthly")
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        store = budget_store(kind, pool)
        store.lease_ttl = timedelta(seconds=1)  # A's lease expires soon after it dies
        a = BudgetManager(store, f"a-{tenant}", slice_fraction=Decimal("0.4"))
        b = BudgetManager(store, f"b-{tenant}", slice_fraction=Decimal("0.4"))
        await a.reserve("a1", tenant, budget, "monthly", Decimal(4))
        await b.reserve("b1", tenant, budget, "monthly", Decimal(4))
        a.settle("a1", Decimal(4))
        b.settle("b1", Decimal(4))
        await b.flush()  # B's report: its 4 are pending (not written)
        with psycopg.connect(database_url, autocommit=True) as conn:
            UsageStore().write(conn, [ledger_row("a1", tenant, Decimal(4))])  # A's row is written...
        # ... and A dies: no `written`, no report; its lease expires.
        deadline = time.monotonic() + 10
        while await lease_alive(kind, pool, tenant, a.holder):
            assert time.monotonic() < deadline, "A's lease never expired"
            await asyncio.sleep(0.1)  # poll interval
        try:
            await b.reserve("b2", tenant, budget, "monthly", Decimal(3))
            admitted = True
        except BudgetExceeded:
            admitted = False
        return admitted, await _ledger(pool, tenant, start)


async def lease_alive(kind: str, pool: AsyncConnectionPool, scope: str, holder: str) -> bool:
    """Whether the store still counts ``holder``'s lease of ``scope`` this month."""
    if kind == "postgres":
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM budget_leases WHERE tenant_id = %s AND holder = %s AND expires_at > now()",
                (scope, holder),
            )
            return await cursor.fetchone() is not None
    key = f"billingproxy:budget:{scope}:{int(period_start('monthly').timestamp())}:expiry"
    expiry = redis.Redis(host="127.0.0.1", port=6379).zscore(key, holder)
    return expiry is not None and expiry > time.time()


async def _ledger(pool: AsyncConnectionPool, tenant: str, start: datetime) -> Decimal:
    async with pool.connection() as conn:
        cursor = await conn.execute(*derived_spend_query(tenant, start))
        return Decimal((await cursor.fetchone())["spent"])


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_spend_has_one_source_the_ledger_plus_pending_so_a_dead_holder_costs_no_overshoot(database_url, kind):
    admitted, ledger = asyncio.run(dead_holder_scenario(database_url, kind))
    assert ledger == 4  # A's row, in the rollup
    assert not admitted  # 10 - 4 (ledger) - 4 (B's pending) = 2 < 3


async def reserve_ok(manager: BudgetManager, request_id: str, tenant: str, amount: str) -> bool:
    try:
        await manager.reserve(request_id, tenant, Decimal(10), "monthly", Decimal(amount))
    except BudgetExceeded:
        return False
    return True


async def killed_holder_scenario(database_url: str, kind: str) -> list[bool]:
    """A leases 4 of a budget of 10 and admits a request of 3 from it (the store never hears of
    the reservation), then is killed. Once A's lease expires its 4 stay in doubt: B gets 6, not 7.
    `usage audit` puts A's request on the ledger (0.5, interrupted) and releases A's doubt: B can
    then use all the ledger leaves (9.5), not more."""
    tenant = f"tn_doubt_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        store = budget_store(kind, pool)
        store.lease_ttl = timedelta(seconds=1)
        a = BudgetManager(store, f"a-{tenant}", slice_fraction=Decimal("0.4"))
        b = BudgetManager(store, f"b-{tenant}", slice_fraction=Decimal("0.01"))
        assert await reserve_ok(a, "a1", tenant, "3")
        deadline = time.monotonic() + 10  # A is dead from here: its lease expires unrenewed
        while await lease_alive(kind, pool, tenant, a.holder):
            assert time.monotonic() < deadline, "A's lease never expired"
            await asyncio.sleep(0.1)  # poll interval
        outcomes = [await reserve_ok(b, "b1", tenant, "6.1"), await reserve_ok(b, "b2", tenant, "6")]
        b.settle("b2", ZERO)
        with psycopg.connect(database_url, autocommit=True) as conn:
            UsageStore().write(conn, [ledger_row("a1", tenant, Decimal("0.5"))])  # the audit's interrupted row
        redis_url = "redis://127.0.0.1:6379/0" if kind == "redis" else None
        released = release_dead_holders(database_url, [a.holder], datetime.now(UTC), redis_url)
        outcomes.append(released == 1)
        outcomes += [await reserve_ok(b, "b3", tenant, "9.5001"), await reserve_ok(b, "b4", tenant, "9.5")]
        return outcomes


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_killed_holders_lease_stays_in_doubt_until_the_audit_releases_it(database_url, kind):
    assert asyncio.run(killed_holder_scenario(database_url, kind)) == [False, True, True, False, True]


async def exit_release_scenario(database_url: str, kind: str) -> list[bool]:
    """C exits normally: its slice is free at once, only what is still unwritten (its pending 1)
    stays in doubt, so D gets 9 at once and not 9.0001."""
    tenant = f"tn_exit_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        store = budget_store(kind, pool)
        c = BudgetManager(store, f"c-{tenant}", slice_fraction=Decimal("0.5"))
        d = BudgetManager(store, f"d-{tenant}", slice_fraction=Decimal("0.01"))
        assert await reserve_ok(c, "c1", tenant, "2")
        c.settle("c1", Decimal(1))  # its row is spilled, never written: pending at exit
        await store.release(c.holder, c.closing_reports())
        return [await reserve_ok(d, "d1", tenant, "9.0001"), await reserve_ok(d, "d2", tenant, "9")]


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_holder_that_exits_frees_its_slice_at_once_and_leaves_only_unwritten_spend_in_doubt(database_url, kind):
    assert asyncio.run(exit_release_scenario(database_url, kind)) == [False, True]
