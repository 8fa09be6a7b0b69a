"""The budget store in PostgreSQL, shared by every proxy instance (see manager.py). The only module
that writes ``budget_spend`` and ``budget_leases``.

A budget's subject is a scope (billingproxy.budgets.scopes): a tenant, a key or an end user; it
is stored in the ``tenant_id`` column (migration 0017). Each acquire locks the scope-period row
(``FOR UPDATE``), so grants for one scope are serialised across instances while different scopes
proceed in parallel, and a holder's report (which may lower its pending spend once the rows are
written) cannot slip between a grant's read of the ledger and its read of the leases.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from billingproxy.budgets.manager import BudgetStoreUnavailable, Grant, Report, crossed_thresholds
from billingproxy.budgets.spend import derived_spend_query, lease_sums_query
from billingproxy.metering import ZERO

__all__ = ["LEASE_TTL", "PostgresBudgetStore", "release_holders"]

# Holders renew every second (BudgetManager.run): a dead holder's slice is free again within 10 s.
LEASE_TTL = timedelta(seconds=10)

_ENSURE = """INSERT INTO budget_spend (tenant_id, period_start) VALUES (%s, %s) ON CONFLICT DO NOTHING"""
_LOCK = """SELECT last_threshold FROM budget_spend WHERE tenant_id = %s AND period_start = %s FOR UPDATE"""
_HOLD = """INSERT INTO budget_leases (tenant_id, period_start, holder, amount, pending, expires_at)
    VALUES (%s, %s, %s, %s, %s, now() + %s)
    ON CONFLICT (tenant_id, period_start, holder)
    DO UPDATE SET amount = excluded.amount, pending = excluded.pending, expires_at = excluded.expires_at"""
_RELEASE = """UPDATE budget_leases SET amount = %s, pending = %s, expires_at = now()
    WHERE tenant_id = %s AND period_start = %s AND holder = %s"""
_ANNOUNCE = """UPDATE budget_spend SET last_threshold = %s
    WHERE tenant_id = %s AND period_start = %s AND last_threshold < %s RETURNING 1"""


class PostgresBudgetStore:
    def __init__(self, pool: AsyncConnectionPool, lease_ttl: timedelta = LEASE_TTL) -> None:
        self.pool = pool
        self.lease_ttl = lease_ttl

    async def acquire(self, holder: str, report: Report, kept: Decimal, want: Decimal, need: Decimal) -> Grant:
        try:
            return await self._acquire(holder, report, kept, want, need)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise BudgetStoreUnavailable(str(exc)) from exc

    async def _acquire(self, holder: str, report: Report, kept: Decimal, want: Decimal, need: Decimal) -> Grant:
        async with self.pool.connection(timeout=2) as conn, conn.transaction():
            await self._lock(conn, report)  # a holder lowering its pending waits for this grant
            spent, others, others_pending = await self._spent(conn, holder, report)
            free = report.budget - spent - (others - others_pending) - (kept - report.pending)
            granted = min(want, free) if free >= need else ZERO
            await conn.execute(_HOLD, _lease(holder, report, kept + granted, self.lease_ttl))
        return Grant(granted=granted, spent=spent, budget=report.budget, others=others - others_pending)

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        crossed: list[tuple[str, int, Decimal]] = []
        async with self.pool.connection() as conn, conn.transaction():
            # Locks in one order on every instance: two reports never wait for each other.
            for report in sorted(reports, key=lambda r: (r.tenant_id, r.period_start)):
                announced = await self._lock(conn, report)
                await conn.execute(_HOLD, _lease(holder, report, report.holding, self.lease_ttl))
                # Thresholds on the ledger alone: pending spend may already be in it (a row
                # committed, its holder not told yet), and an alert must never fire early.
                spent = await _scalar(conn, *derived_spend_query(report.tenant_id, report.period_start))
                thresholds = crossed_thresholds(spent, report.budget, announced)
                if thresholds:
                    # Conditional update: of several instances seeing the crossing, one announces it.
                    top = thresholds[-1]
                    cursor = await conn.execute(_ANNOUNCE, (top, report.tenant_id, report.period_start, top))
                    if await cursor.fetchone():
                        crossed.extend((report.tenant_id, threshold, spent) for threshold in thresholds)
        return crossed

    async def release(self, holder: str, reports: list[Report]) -> None:
        """At exit: our leases end now (the slices are free at once); what they still keep (rows
        not written, requests never settled: the report's holding) stays in doubt."""
        async with self.pool.connection() as conn, conn.transaction():
            for report in reports:
                await conn.execute(
                    _RELEASE,
                    (report.holding, report.pending, report.tenant_id, report.period_start, holder),
                )

    @staticmethod
    async def _lock(conn: psycopg.AsyncConnection, report: Report) -> int:
        """Serialise grants for this scope-period across instances; returns the announced threshold."""
        await conn.execute(_ENSURE, (report.tenant_id, report.period_start))
        cursor = await conn.execute(_LOCK, (report.tenant_id, report.period_start))
        row = await cursor.fetchone()
        return int(row["last_threshold"])

    @staticmethod
    async def _spent(conn: psycopg.AsyncConnection, holder: str, report: Report) -> tuple[Decimal, Decimal, Decimal]:
        """Spend from its one source: the ledger's rollups plus every live holder's pending spend and
        dead holders' doubt; and what the others hold, and of that their pending spend."""
        ledger = await _scalar(conn, *derived_spend_query(report.tenant_id, report.period_start))
        cursor = await conn.execute(*lease_sums_query(report.tenant_id, report.period_start, but=holder))
        row = await cursor.fetchone()
        others, others_pending = Decimal(row["held"]), Decimal(row["pending"])
        return ledger + others_pending + Decimal(row["in_doubt"]) + report.pending, others, others_pending


def _lease(holder: str, report: Report, amount: Decimal, ttl: timedelta) -> tuple:
    """The _HOLD parameters: the holder's lease of ``amount``, of which ``report.pending`` is spent."""
    return (report.tenant_id, report.period_start, holder, amount, report.pending, ttl)


def release_holders(conn: psycopg.Connection, holders: list[str], until: datetime) -> int:
    """``usage audit`` put these holders' requests up to ``until`` on the ledger: what their leases
    left in doubt (expired by then: the holder is dead) is no longer counted. Returns the leases."""
    cursor = conn.execute(
        """UPDATE budget_leases SET amount = 0, pending = 0
           WHERE holder = ANY(%s) AND expires_at <= least(now(), %s) AND amount > 0""",
        (holders, until),
    )
    return cursor.rowcount


async def _scalar(conn: psycopg.AsyncConnection, query: str, params: tuple) -> Decimal:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return Decimal(next(iter(row.values())))
