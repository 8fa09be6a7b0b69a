"""The budget manager hands slices back to the real PostgreSQL store: an idle holder at its next
flush, every holder at SIGTERM (``hand_back``), keeping only what requests in flight reserved."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from billingproxy.budgets import BudgetManager, PostgresBudgetStore


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
        busy = await held_by(pool, tenant, manager.holder)  # the slice (1.0) less what "a" spent
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
    assert busy == Decimal("0.9") and after == 0


def test_hand_back_keeps_only_what_requests_in_flight_reserved(database_url):
    busy, kept, after = asyncio.run(scenario(database_url, draining=True))
    assert busy == Decimal("0.9") and kept == Decimal("0.5") and after == 0
