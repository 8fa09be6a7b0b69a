"""The billing outbox: closed usage windows sealed into immutable entries, one per meter.

The proxies' writers add billable usage to ``billing_accrual`` in the same transaction that
stores the usage rows, so nothing billable can be stored without being accrued. Sealing turns a
closed window's not-yet-reported totals into outbox entries with deterministic identifiers;
a window that receives rows after it was sealed (a replayed spill file) is sealed again, and the
new entry reports only the difference (``seal`` number 1, 2, … in the identifier).

Integer meter values carry their rounding per tenant and meter: each seal reports
``floor(accrued) - reported``, so the reported sum always equals the database sum, floored to
the unit (one micro-dollar by default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import psycopg
from psycopg.rows import dict_row

from billingproxy.settings import Meter

MICRO = Decimal(1_000_000)
_SEAL_LOCK = 0x6270_5345  # advisory lock class for sealing ("bpSE"); the key is the tenant


@dataclass(frozen=True)
class WindowDelta:
    """Usage that arrived for one window since its last seal."""

    window_start: datetime
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    seal: int  # how many times this window was sealed before


@dataclass(frozen=True)
class Entry:
    identifier: str
    tenant_id: str
    customer_id: str
    meter: str
    window_start: datetime
    value: int


def identifier(tenant_id: str, meter: str, window_start: datetime, seal: int) -> str:
    """Deterministic, ≤ 100 characters (Stripe's limit), readable where it helps."""
    digest = hashlib.sha256(f"{tenant_id}\x00{meter}".encode()).hexdigest()[:20]
    return f"bp-{window_start:%Y%m%dT%H%M%S}-{seal}-{digest}"


def measure(meter: Meter, delta: WindowDelta, multiplier: Decimal) -> Decimal:
    """The exact (unrounded) amount a window adds to a meter, in the meter's unit."""
    if meter.measure == "cost_microusd":
        return delta.cost_usd * MICRO * multiplier
    if meter.measure == "input_tokens":
        return Decimal(delta.input_tokens)
    return Decimal(delta.output_tokens)


def carry(accrued: Decimal, reported: int, amount: Decimal) -> tuple[Decimal, int]:
    """Add an exact amount to a meter's running total; returns (new total, units to report now)."""
    accrued += amount
    return accrued, int(accrued.to_integral_value(ROUND_FLOOR)) - reported


def plan_entries(
    tenant_id: str,
    customer_id: str,
    multiplier: Decimal,
    meters: Iterable[Meter],
    deltas: list[WindowDelta],
    carries: dict[str, tuple[Decimal, int]],
) -> tuple[list[Entry], dict[str, tuple[Decimal, int]]]:
    """The entries for a tenant's window deltas (in window order) and the updated carries.

    Pure: the property tests drive it directly.
    """
    entries: list[Entry] = []
    carries = dict(carries)
    for meter in meters:
        accrued, reported = carries.get(meter.event_name, (Decimal(0), 0))
        for delta in deltas:
            accrued, value = carry(accrued, reported, measure(meter, delta, multiplier))
            if value > 0:
                reported += value
                entries.append(
                    Entry(
                        identifier(tenant_id, meter.event_name, delta.window_start, delta.seal),
                        tenant_id,
                        customer_id,
                        meter.event_name,
                        delta.window_start,
                        value,
                    )
                )
        carries[meter.event_name] = (accrued, reported)
    return entries, carries


_TENANTS_DUE = """
SELECT DISTINCT a.tenant_id FROM billing_accrual a
WHERE a.window_start < %s
  AND (a.cost_usd <> a.sealed_cost_usd OR a.input_tokens <> a.sealed_input_tokens
       OR a.output_tokens <> a.sealed_output_tokens)"""

_DELTAS = """
SELECT window_start, cost_usd - sealed_cost_usd AS cost_usd, input_tokens - sealed_input_tokens AS input_tokens,
       output_tokens - sealed_output_tokens AS output_tokens, seals AS seal
FROM billing_accrual
WHERE tenant_id = %s AND window_start < %s
  AND (cost_usd <> sealed_cost_usd OR input_tokens <> sealed_input_tokens OR output_tokens <> sealed_output_tokens)
ORDER BY window_start
FOR UPDATE"""

_MARK_SEALED = """
UPDATE billing_accrual SET sealed_cost_usd = sealed_cost_usd + %s, sealed_input_tokens = sealed_input_tokens + %s,
       sealed_output_tokens = sealed_output_tokens + %s, seals = seals + 1
WHERE tenant_id = %s AND window_start = %s"""

_INSERT_ENTRY = """
INSERT INTO billing_outbox (identifier, tenant_id, customer_id, meter, window_start, value)
VALUES (%s, %s, %s, %s, %s, %s)"""

_SAVE_CARRY = """
INSERT INTO billing_carry (tenant_id, meter, accrued, reported) VALUES (%s, %s, %s, %s)
ON CONFLICT (tenant_id, meter) DO UPDATE SET accrued = excluded.accrued, reported = excluded.reported"""


def seal(
    conn: psycopg.Connection,
    meters: Iterable[Meter],
    *,
    before: datetime,
    customer_required: bool = True,
) -> list[Entry]:
    """Seal every tenant's windows that start before ``before``; returns the new entries.

    One transaction per tenant under a per-tenant advisory lock, so concurrent relays seal each
    delta once. A tenant without a billing customer stays unsealed when the sink needs one
    (its usage is reported once it is linked).
    """
    meters = tuple(meters)
    sealed: list[Entry] = []
    with conn.cursor(row_factory=dict_row) as cur:
        tenants = [row["tenant_id"] for row in cur.execute(_TENANTS_DUE, (before,)).fetchall()]
    conn.commit()
    for tenant_id in tenants:
        sealed.extend(_seal_tenant(conn, tenant_id, meters, before, customer_required))
    return sealed


def _seal_tenant(
    conn: psycopg.Connection, tenant_id: str, meters: tuple[Meter, ...], before: datetime, customer_required: bool
) -> list[Entry]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SEAL_LOCK, tenant_id))
        tenant = cur.execute(
            "SELECT stripe_customer_id, price_multiplier FROM tenants WHERE id = %s", (tenant_id,)
        ).fetchone()
        customer = tenant and tenant["stripe_customer_id"]
        if not customer:
            if customer_required:
                return []
            customer = tenant_id
        multiplier = tenant["price_multiplier"] if tenant else Decimal(1)
        deltas = [WindowDelta(**row) for row in cur.execute(_DELTAS, (tenant_id, before)).fetchall()]
        if not deltas:
            return []  # another relay sealed them first
        rows = cur.execute(
            "SELECT meter, accrued, reported FROM billing_carry WHERE tenant_id = %s FOR UPDATE", (tenant_id,)
        )
        carries = {row["meter"]: (row["accrued"], row["reported"]) for row in rows.fetchall()}
        entries, carries = plan_entries(tenant_id, customer, multiplier, meters, deltas, carries)
        cur.executemany(
            _INSERT_ENTRY,
            [(e.identifier, e.tenant_id, e.customer_id, e.meter, e.window_start, e.value) for e in entries],
        )
        cur.executemany(
            _MARK_SEALED,
            [(d.cost_usd, d.input_tokens, d.output_tokens, tenant_id, d.window_start) for d in deltas],
        )
        cur.executemany(_SAVE_CARRY, [(tenant_id, meter, *state) for meter, state in carries.items()])
    return entries


def closed_before(now: datetime, window_s: int, grace_s: float) -> datetime:
    """Windows starting before this have closed, ``grace_s`` ago (late batches have landed)."""
    return now - timedelta(seconds=window_s + grace_s)
