"""The budget store in PostgreSQL, shared by every proxy instance (see manager.py). The only module
that writes ``budget_spend`` and ``budget_leases``.

A budget's subject is a scope (billingproxy.budgets.scopes): a tenant, a key or an end user; it
is stored in the ``tenant_id`` column (migration 0017). Each acquire locks the scope-period row
(``FOR UPDATE``), so grants for one scope are serialised across instances while different scopes
proceed in parallel.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from billingproxy.budgets.manager import BudgetStoreUnavailable, Grant, Report, crossed_thresholds
from billingproxy.budgets.spend import derived_spend_query
from billingproxy.metering import ZERO

__all__ = ["LEASE_TTL", "PostgresBudgetStore"]

# Holders renew every second (BudgetManager.run): a dead holder's slice is free again within 10 s.
LEASE_TTL = timedelta(seconds=10)

_ENSURE = """INSERT INTO budget_spend (tenant_id, period_start) VALUES (%s, %s) ON CONFLICT DO NOTHING"""
_ADD_SPENT = """UPDATE budget_spend SET spent = spent + %s, updated_at = now()
    WHERE tenant_id = %s AND period_start = %s RETURNING spent, last_threshold"""
_OTHERS = """SELECT coalesce(sum(amount), 0) AS held FROM budget_leases
    WHERE tenant_id = %s AND period_start = %s AND holder <> %s AND expires_at > now()"""
_HOLD = """INSERT INTO budget_leases (tenant_id, period_start, holder, amount, expires_at)
    VALUES (%s, %s, %s, %s, now() + %s)
    ON CONFLICT (tenant_id, period_start, holder)
    DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at"""
_ANNOUNCE = """UPDATE budget_spend SET last_threshold = %s
    WHERE tenant_id = %s AND period_start = %s AND last_threshold < %s RETURNING 1"""


class PostgresBudgetStore:
    def __init__(self, pool: AsyncConnectionPool, lease_ttl: timedelta = LEASE_TTL) -> None:
        self.pool = pool
        self.lease_ttl = lease_ttl

    async def acquire(self, holder: str, report: Report, reserved: Decimal, want: Decimal, need: Decimal) -> Grant:
        try:
            return await self._acquire(holder, report, reserved, want, need)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise BudgetStoreUnavailable(str(exc)) from exc

    async def _acquire(self, holder: str, report: Report, reserved: Decimal, want: Decimal, need: Decimal) -> Grant:
        async with self.pool.connection(timeout=2) as conn, conn.transaction():
            spent, _ = await self._add_spent(conn, report)
            derived = await _scalar(conn, *derived_spend_query(report.tenant_id, report.period_start))
            others = await _scalar(conn, _OTHERS, (report.tenant_id, report.period_start, holder))
            free = report.budget - max(spent, derived) - others - reserved
            granted = min(want, free) if free >= need else ZERO
            await conn.execute(
                _HOLD, (report.tenant_id, report.period_start, holder, reserved + granted, self.lease_ttl)
            )
        return Grant(granted=granted, spent=max(spent, derived), budget=report.budget, others=others)

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        crossed: list[tuple[str, int, Decimal]] = []
        async with self.pool.connection() as conn, conn.transaction():
            for report in reports:
                spent, announced = await self._add_spent(conn, report)
                await conn.execute(
                    _HOLD, (report.tenant_id, report.period_start, holder, report.holding, self.lease_ttl)
                )
                thresholds = crossed_thresholds(spent, report.budget, announced)
                if thresholds:
                    # Conditional update: of several instances seeing the crossing, one announces it.
                    top = thresholds[-1]
                    cursor = await conn.execute(_ANNOUNCE, (top, report.tenant_id, report.period_start, top))
                    if await cursor.fetchone():
                        crossed.extend((report.tenant_id, threshold, spent) for threshold in thresholds)
        return crossed

    @staticmethod
    async def _add_spent(conn: psycopg.AsyncConnection, report: Report) -> tuple[Decimal, int]:
        await conn.execute(_ENSURE, (report.tenant_id, report.period_start))
        cursor = await conn.execute(_ADD_SPENT, (report.consumed, report.tenant_id, report.period_start))
        row = await cursor.fetchone()
        return Decimal(row["spent"]), int(row["last_threshold"])


async def _scalar(conn: psycopg.AsyncConnection, query: str, params: tuple) -> Decimal:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return Decimal(next(iter(row.values())))
