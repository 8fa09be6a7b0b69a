"""The budget store in Redis (``BILLINGPROXY_BUDGET_STORE=redis``), same contract as PostgreSQL.

Money is kept as integers of 1e-10 USD (the precision of ``cost_usd``), never floats. Each grant
and report is one Lua script, so it is atomic across instances. A tenant-period's spend is seeded
from the usage rollup in PostgreSQL the first time it is seen (spend survives a Redis restart).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from psycopg_pool import AsyncConnectionPool

from billingproxy.budgets.manager import BudgetStoreUnavailable, Grant, Report, crossed_thresholds
from billingproxy.budgets.postgres_store import LEASE_TTL
from billingproxy.budgets.spend import derived_spend_query
from billingproxy.errors import ConfigError
from billingproxy.metering import COST_QUANTUM

__all__ = ["RedisBudgetStore"]

UNIT = COST_QUANTUM  # 1e-10 USD

# KEYS[1] spend hash {spent, announced}; KEYS[2] lease hash holder->units; KEYS[3] zset holder->expiry
# ARGV: holder, consumed, holding_or_reserved, want, need, budget, now, ttl, mode ("acquire"|"report")
_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then return {-1, 0, 0, 0} end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
local now, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('HDEL', KEYS[2], h)
  redis.call('ZREM', KEYS[3], h)
end
local granted, others = 0, 0
local mine = tonumber(ARGV[3])
if ARGV[9] == 'acquire' then
  local held = redis.call('HGETALL', KEYS[2])
  for i = 1, #held, 2 do
    if held[i] ~= ARGV[1] then others = others + tonumber(held[i + 1]) end
  end
  local free = tonumber(ARGV[6]) - spent - others - mine
  if free >= tonumber(ARGV[5]) then granted = math.min(tonumber(ARGV[4]), free) end
  mine = mine + granted
end
redis.call('HSET', KEYS[2], ARGV[1], mine)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
local announced = tonumber(redis.call('HGET', KEYS[1], 'announced') or '0')
return {spent, granted, announced, others}
"""

# Lua numbers are doubles: exact for integers below 2^53 units of 1e-10 USD, i.e. ~900k USD
# per tenant and period. Larger budgets belong in the PostgreSQL store.
MAX_EXACT_UNITS = 2**53


def _units(amount: Decimal) -> int:
    return int((amount / UNIT).to_integral_value())


def _usd(units: int) -> Decimal:
    return Decimal(units) * UNIT


class RedisBudgetStore:
    def __init__(self, client: aioredis.Redis, pool: AsyncConnectionPool, lease_ttl: timedelta = LEASE_TTL) -> None:
        self.client = client
        self.pool = pool  # for seeding spend from the usage rollup
        self.lease_ttl = lease_ttl
        self._script = client.register_script(_SCRIPT)
        self._seeded: set[str] = set()

    @staticmethod
    def _keys(report: Report) -> list[str]:
        base = f"billingproxy:budget:{report.tenant_id}:{int(report.period_start.timestamp())}"
        return [base, base + ":leases", base + ":expiry"]

    async def _seed(self, report: Report, keys: list[str], *, again: bool = False) -> None:
        if keys[0] in self._seeded and not again:
            return
        if not await self.client.hexists(keys[0], "spent"):
            derived = await _derived_spend(self.pool, report.tenant_id, report.period_start)
            await self.client.hsetnx(keys[0], "spent", _units(derived))
        self._seeded.add(keys[0])

    async def _run(self, holder: str, report: Report, mine: Decimal, want: Decimal, need: Decimal, mode: str):
        if _units(report.budget) >= MAX_EXACT_UNITS:
            raise ConfigError("budgets above ~900,000 USD per period need the PostgreSQL budget store")
        keys = self._keys(report)
        try:
            await self._seed(report, keys)
            args = [holder, _units(report.consumed), _units(mine), _units(want), _units(need)]
            args += [_units(report.budget), int(time.time()), int(self.lease_ttl.total_seconds()), mode]
            spent, granted, announced, others = await self._script(keys=keys, args=args)
            if int(spent) < 0:  # Redis lost the spend since we seeded it: seed again, from PostgreSQL
                await self._seed(report, keys, again=True)
                spent, granted, announced, others = await self._script(keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, psycopg.OperationalError) as exc:
            raise BudgetStoreUnavailable(str(exc)) from exc
        return _usd(int(spent)), _usd(int(granted)), int(announced), _usd(int(others)), keys

    async def acquire(self, holder: str, report: Report, reserved: Decimal, want: Decimal, need: Decimal) -> Grant:
        spent, granted, _, others, _ = await self._run(holder, report, reserved, want, need, "acquire")
        return Grant(granted=granted, spent=spent, budget=report.budget, others=others)

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        crossed: list[tuple[str, int, Decimal]] = []
        for report in reports:
            spent, _, announced, _, keys = await self._run(
                holder, report, report.holding, Decimal(0), Decimal(0), "report"
            )
            thresholds = crossed_thresholds(spent, report.budget, announced)
            # HSET on a field only if the stored value is lower: a tiny script keeps it atomic.
            if thresholds and await self.client.eval(_ANNOUNCE, 1, keys[0], thresholds[-1]):
                crossed.extend((report.tenant_id, t, spent) for t in thresholds)
        return crossed


_ANNOUNCE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'announced') or '0')
if current < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'announced', ARGV[1]) return 1 end
return 0
"""


async def _derived_spend(pool: AsyncConnectionPool, tenant_id: str, start: datetime) -> Decimal:
    async with pool.connection(timeout=2) as conn:
        cursor = await conn.execute(*derived_spend_query(tenant_id, start))
        row = await cursor.fetchone()
    return Decimal(row["spent"])
