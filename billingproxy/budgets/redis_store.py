"""The budget store in Redis (``BILLINGPROXY_BUDGET_STORE=redis``), same contract as PostgreSQL.

Redis holds only the leases, dead holders' doubt and the announced threshold: spend has one
source, the usage ledger in PostgreSQL (manager.py), read on every grant and report and passed
into the script, so a Redis that lost its data loses no written spend (only the live leases, back
with their next report, and dead holders' doubt). Money is kept as integers of 1e-10 USD (the precision
of ``cost_usd``), never floats. Each grant and report is one Lua script, atomic across instances.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import redis
import redis.asyncio as aioredis
import redis.exceptions
from psycopg_pool import AsyncConnectionPool

from billingproxy.budgets.manager import BudgetStoreUnavailable, Grant, Report, crossed_thresholds
from billingproxy.budgets.postgres_store import LEASE_TTL
from billingproxy.budgets.spend import IN_DOUBT, derived_spend_query
from billingproxy.errors import ConfigError
from billingproxy.metering import COST_QUANTUM, ZERO

__all__ = ["RedisBudgetStore", "release_holders"]

UNIT = COST_QUANTUM  # 1e-10 USD

# KEYS[1] hash {announced}; KEYS[2] lease hash holder->units held (pending included);
# KEYS[3] zset holder->expiry; KEYS[4] hash holder->pending units; KEYS[5] hash dead holder->units
# in doubt; KEYS[6] zset dead holder->end of its doubt.
# ARGV: holder, ledger, kept, want, need, budget, now, ttl, mode ("acquire"|"report"|"release"),
# pending, doubt ttl. A lease that expires moves whole into doubt (counted as spent for the doubt
# ttl, spend.IN_DOUBT, or until `usage audit`); a released one (exit) moves what it still keeps.
_SCRIPT = """
local now, ttl, doubt_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[11])
local function retire(h, at)
  local left = tonumber(redis.call('HGET', KEYS[2], h) or '0')
  redis.call('HDEL', KEYS[2], h)
  redis.call('HDEL', KEYS[4], h)
  redis.call('ZREM', KEYS[3], h)
  if left > 0 then
    redis.call('HSET', KEYS[5], h, left)
    redis.call('ZADD', KEYS[6], at + doubt_ttl, h)
  end
end
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)) do
  redis.call('HDEL', KEYS[5], h)
  redis.call('ZREM', KEYS[6], h)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES')
for i = 1, #expired, 2 do retire(expired[i], tonumber(expired[i + 1])) end
if ARGV[9] == 'release' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  retire(ARGV[1], now)
  return {0, 0, 0, 0, 0}
end
-- Our own lease is alive again (it had expired: renewals failed): nothing of ours is in doubt.
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
local others, others_pending, doubt = 0, 0, 0
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if held[i] ~= ARGV[1] then others = others + tonumber(held[i + 1]) end
end
local pending = redis.call('HGETALL', KEYS[4])
for i = 1, #pending, 2 do
  if pending[i] ~= ARGV[1] then others_pending = others_pending + tonumber(pending[i + 1]) end
end
local dead = redis.call('HGETALL', KEYS[5])
for i = 1, #dead, 2 do doubt = doubt + tonumber(dead[i + 1]) end
local granted, mine = 0, tonumber(ARGV[3])
if ARGV[9] == 'acquire' then
  local free = tonumber(ARGV[6]) - tonumber(ARGV[2]) - doubt - others - mine
  if free >= tonumber(ARGV[5]) then granted = math.min(tonumber(ARGV[4]), free) end
  mine = mine + granted
end
redis.call('HSET', KEYS[2], ARGV[1], mine)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[10])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
local announced = tonumber(redis.call('HGET', KEYS[1], 'announced') or '0')
return {granted, announced, others, others_pending, doubt}
"""

# Lua numbers are doubles: exact for integers below 2^53 units of 1e-10 USD, i.e. ~900k USD
# per tenant and period. Larger budgets belong in the PostgreSQL store.
MAX_EXACT_UNITS = 2**53
_CONSISTENT_TRIES = 3  # grants asked again when the ledger moved during one
_SUFFIXES = (":leases", ":expiry", ":pending", ":doubt", ":doubt_expiry")


def _units(amount: Decimal) -> int:
    return int((amount / UNIT).to_integral_value())


def _usd(units: int) -> Decimal:
    return Decimal(units) * UNIT


class RedisBudgetStore:
    def __init__(self, client: aioredis.Redis, pool: AsyncConnectionPool, lease_ttl: timedelta = LEASE_TTL) -> None:
        self.client = client
        self.pool = pool  # the usage ledger: the source of spend
        self.lease_ttl = lease_ttl
        self._script = client.register_script(_SCRIPT)

    @staticmethod
    def _keys(report: Report) -> list[str]:
        base = f"billingproxy:budget:{report.tenant_id}:{int(report.period_start.timestamp())}"
        return [base, *(base + suffix for suffix in _SUFFIXES)]

    async def _run(self, holder: str, report: Report, kept: Decimal, want: Decimal, need: Decimal, mode: str):
        if _units(report.budget) >= MAX_EXACT_UNITS:
            raise ConfigError("budgets above ~900,000 USD per period need the PostgreSQL budget store")
        keys = self._keys(report)
        try:
            for _ in range(_CONSISTENT_TRIES):
                ledger = await _ledger_spend(self.pool, report.tenant_id, report.period_start)
                args = [holder, _units(ledger), _units(kept), _units(want), _units(need)]
                args += [_units(report.budget), int(time.time()), int(self.lease_ttl.total_seconds()), mode]
                args += [_units(report.pending), int(IN_DOUBT.total_seconds())]
                granted, announced, others, others_pending, doubt = await self._script(keys=keys, args=args)
                granted = _usd(int(granted))
                if granted <= 0:
                    break
                # Another holder may have lowered its pending (its rows committed) between our read
                # of the ledger and the script, so those rows would count nowhere. If the ledger
                # did not move meanwhile, no such row exists; if it did, ask again (the script
                # resets our lease each time). Still moving after that: keep the growth out of the
                # grant (the store then thinks we hold more: safe; the next report corrects it).
                grew = await _ledger_spend(self.pool, report.tenant_id, report.period_start) - ledger
                if grew <= 0:  # not moved (or lowered by a re-rate): no committed row is missing
                    break
            else:
                granted = max(granted - grew, ZERO)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, psycopg.OperationalError) as exc:
            raise BudgetStoreUnavailable(str(exc)) from exc
        others_pending = _usd(int(others_pending))
        spent = ledger + others_pending + _usd(int(doubt)) + report.pending
        return spent, granted, int(announced), _usd(int(others)) - others_pending, ledger

    async def acquire(self, holder: str, report: Report, kept: Decimal, want: Decimal, need: Decimal) -> Grant:
        spent, granted, _, others, _ = await self._run(holder, report, kept, want, need, "acquire")
        return Grant(granted=granted, spent=spent, budget=report.budget, others=others)

    async def report(self, holder: str, reports: list[Report]) -> list[tuple[str, int, Decimal]]:
        crossed: list[tuple[str, int, Decimal]] = []
        for report in reports:
            _, _, announced, _, ledger = await self._run(
                holder, report, report.holding, Decimal(0), Decimal(0), "report"
            )
            # Thresholds on the ledger alone: pending spend may already be in it (a row committed,
            # its holder not told yet), and an alert must never fire early.
            thresholds = crossed_thresholds(ledger, report.budget, announced)
            # HSET on a field only if the stored value is lower: a tiny script keeps it atomic.
            if thresholds and await self.client.eval(_ANNOUNCE, 1, self._keys(report)[0], thresholds[-1]):
                crossed.extend((report.tenant_id, t, ledger) for t in thresholds)
        return crossed

    async def release(self, holder: str, reports: list[Report]) -> None:
        """At exit: our leases end now; what they still keep (rows not written, requests never
        settled: the report's holding) stays in doubt."""
        now, doubt_s = int(time.time()), int(IN_DOUBT.total_seconds())
        for report in reports:
            args = [holder, 0, _units(report.holding), 0, 0, _units(report.budget), now, 0, "release"]
            args += [_units(report.pending), doubt_s]
            await self._script(keys=self._keys(report), args=args)


def release_holders(client: redis.Redis, holders: list[str], until: datetime) -> int:
    """``usage audit`` put these dead holders' requests up to ``until`` on the ledger: their doubt
    (leases that expired by then) is no longer counted. Returns the entries released."""
    released, latest = 0, until.timestamp() + IN_DOUBT.total_seconds()
    for key in client.scan_iter(match="billingproxy:budget:*:doubt", count=1000):
        for holder in holders:
            score = client.zscore(f"{key}_expiry", holder)  # the client decodes responses
            if score is not None and score <= latest and client.hdel(key, holder):
                released += 1
    return released


_ANNOUNCE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'announced') or '0')
if current < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'announced', ARGV[1]) return 1 end
return 0
"""


async def _ledger_spend(pool: AsyncConnectionPool, tenant_id: str, start: datetime) -> Decimal:
    async with pool.connection(timeout=2) as conn:
        cursor = await conn.execute(*derived_spend_query(tenant_id, start))
        row = await cursor.fetchone()
    return Decimal(row["spent"])
