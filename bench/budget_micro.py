"""Cost of the budget check per request: ``admit`` with a warm slice (the common case), against
a real PostgreSQL store; also how often the store is asked (slice refills).

    python -m bench.budget_micro --iterations 100000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from decimal import Decimal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.compare import database
from billingproxy.access import TenantLimits
from billingproxy.budgets import BudgetManager, PostgresBudgetStore
from billingproxy.metering import PriceTable
from billingproxy.proxy.admission import admit
from testkit.support import REPO

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a typical short prompt"}], "max_tokens": 256}


async def run(url: str, iterations: int) -> None:
    prices = PriceTable.from_config(REPO / "config.yaml")
    async with AsyncConnectionPool(url, kwargs={"row_factory": dict_row}, open=False) as pool:
        tenant_only = TenantLimits("tn_bench", (), Decimal("1000000"), "monthly")
        # Three levels: the tenant's budget, the key's, the end user's (the tenant's default; a
        # thousand overrides for other end users in the cached mapping).
        levels = TenantLimits(
            "tn_bench", (), Decimal("1000000"), "monthly", key_id="key_bench", key_budget_usd=Decimal("1000000"),
            end_user_budget_usd=Decimal("1000000"),
        )  # fmt: skip
        overrides = {f"other-{i}": (Decimal(5), None) for i in range(1000)}
        for name, limits in (("tenant", tenant_only), ("tenant+key+end user", levels)):
            manager = BudgetManager(PostgresBudgetStore(pool), f"bench-holder-{len(name)}")
            samples = []
            for i in range(iterations):
                body = dict(BODY)
                started = time.perf_counter_ns()
                await admit(
                    limits, f"req-{i}", "acompletion", body, prices, manager,
                    end_user="alice", end_user_budgets=overrides,
                )  # fmt: skip
                samples.append((time.perf_counter_ns() - started) / 1000)
                manager.settle(f"req-{i}", Decimal("0.0001"))
            samples.sort()
            print(
                f"admit, {name} budget (model check + max cost + reservations): "
                f"p50 {samples[len(samples) // 2]:.2f} µs   p99 {samples[int(len(samples) * 0.99)]:.2f} µs   "
                f"over {iterations} requests"
            )
            print(f"  store round trips: {manager.store_calls} ({manager.store_calls / iterations:.4%} of requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    args = parser.parse_args()
    url, embedded = database()
    try:
        asyncio.run(run(url, args.iterations))
    finally:
        if embedded is not None:
            embedded.destroy()


if __name__ == "__main__":
    main()
