"""Property test (hypothesis) on the real PostgreSQL budget store, two instances sharing it:
whatever the interleaving of reservations and settlements, spend never exceeds the budget and
nothing stays reserved at rest."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from billingproxy.budgets import BudgetExceeded, BudgetManager, PostgresBudgetStore

amounts = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(2), places=4)
# (max cost reserved, fraction of it actually spent, which instance, settle before next request?)
requests = st.lists(st.tuples(amounts, st.sampled_from([0, 0.25, 1]), st.integers(0, 1), st.booleans()), max_size=40)


async def scenario(database_url: str, budget: Decimal, plan: list) -> tuple[Decimal, list[BudgetManager]]:
    tenant = f"tn_prop_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}) as pool:
        managers = [BudgetManager(PostgresBudgetStore(pool), f"holder-{i}-{tenant}") for i in range(2)]
        settled = Decimal(0)
        open_requests: list[tuple[BudgetManager, str, Decimal]] = []
        for n, (amount, fraction, which, settle_now) in enumerate(plan):
            manager = managers[which]
            request_id = f"r{n}"
            try:
                await manager.reserve(request_id, tenant, budget, "monthly", amount)
            except BudgetExceeded:
                continue
            actual = (amount * Decimal(str(fraction))).quantize(Decimal("1e-10"))
            open_requests.append((manager, request_id, actual))
            if settle_now:
                for m, rid, cost in open_requests:
                    m.settle(rid, cost)
                    settled += cost
                open_requests.clear()
        for m, rid, cost in open_requests:
            m.settle(rid, cost)
            settled += cost
        for manager in managers:
            await manager.flush()
        return settled, managers


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.decimals(min_value=Decimal("0.5"), max_value=Decimal(10), places=2), requests)
def test_spend_never_exceeds_budget_and_reservations_return_to_zero(database_url: str, budget, plan) -> None:
    settled, managers = asyncio.run(scenario(database_url, budget, plan))
    assert settled <= budget
    for manager in managers:
        assert all(lease.reserved == 0 for lease in manager._leases.values())
        assert not manager._reservations
