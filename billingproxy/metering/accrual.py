"""Billable usage per tenant and billing window (``billing_accrual``): the billing outbox's input.

The usage store accrues in the same transaction that inserts the rows (nothing billable can be
stored without being accrued); the outbox seals closed windows. The only module that writes
``billing_accrual``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from billingproxy.metering.record import UsageRecord

__all__ = [
    "WindowDelta",
    "accrual_rows",
    "accrue",
    "adjust_costs",
    "columns_of",
    "mark_sealed",
    "open_deltas",
    "tenants_due",
]


@dataclass(frozen=True)
class WindowDelta:
    """Usage that arrived for one window since its last seal."""

    window_start: datetime
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    seal: int  # how many times this window was sealed before


# Billable usage per tenant and window, for the billing outbox (sealed later by the relay).
ACCRUE_SQL = """
INSERT INTO billing_accrual AS a (tenant_id, window_start, cost_usd, input_tokens, output_tokens)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::numeric[], %s::bigint[], %s::bigint[])
ON CONFLICT (tenant_id, window_start) DO UPDATE SET
    cost_usd = a.cost_usd + excluded.cost_usd,
    input_tokens = a.input_tokens + excluded.input_tokens,
    output_tokens = a.output_tokens + excluded.output_tokens"""


def columns_of(sums: dict[tuple, list]) -> list[list]:
    """Keyed sums as columns for ``unnest``. Sorted keys: concurrent writers upsert the same rows in
    the same order, so they never deadlock."""
    flat = [(*key, *sums[key]) for key in sorted(sums)]
    return [list(column) for column in zip(*flat, strict=True)] if flat else []


def accrual_rows(records: Sequence[UsageRecord], window_s: int) -> list[list]:
    """Billable usage summed per (tenant, window), as columns for ``unnest``.

    Only successful requests bill; a cache hit served free (the default policy) bills nothing.
    """
    sums: dict[tuple, list] = {}
    for record in records:
        if not record.billable:
            continue
        epoch = record.start_time.timestamp()
        window = datetime.fromtimestamp(epoch - epoch % window_s, UTC)
        row = sums.get((record.tenant_id, window))
        if row is None:
            row = sums[(record.tenant_id, window)] = [Decimal(0), 0, 0]
        row[0] += record.cost_usd
        row[1] += record.prompt_tokens
        row[2] += record.completion_tokens
    return columns_of(sums)


def accrue(conn: psycopg.Connection, records: Sequence[UsageRecord], window_s: int) -> None:
    """Add the records' billable usage to their windows (inside the caller's transaction)."""
    columns = accrual_rows(records, window_s)
    if columns:
        conn.execute(ACCRUE_SQL, columns)


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


def tenants_due(conn: psycopg.Connection, before: datetime) -> list[str]:
    """Tenants with unsealed usage in windows starting before ``before``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return [row["tenant_id"] for row in cur.execute(_TENANTS_DUE, (before,)).fetchall()]


def open_deltas(cur: psycopg.Cursor, tenant_id: str, before: datetime) -> list[WindowDelta]:
    """The tenant's unsealed window deltas, in window order, locked until the caller commits."""
    return [WindowDelta(**row) for row in cur.execute(_DELTAS, (tenant_id, before)).fetchall()]


def mark_sealed(cur: psycopg.Cursor, tenant_id: str, deltas: Sequence[WindowDelta]) -> None:
    cur.executemany(
        _MARK_SEALED, [(d.cost_usd, d.input_tokens, d.output_tokens, tenant_id, d.window_start) for d in deltas]
    )


_ADJUST_SQL = """
INSERT INTO billing_accrual AS a (tenant_id, window_start, cost_usd)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::numeric[])
ON CONFLICT (tenant_id, window_start) DO UPDATE SET cost_usd = a.cost_usd + excluded.cost_usd"""


def adjust_costs(conn: psycopg.Connection, tenant_id: str, deltas: Sequence[tuple[datetime, Decimal]], window_s: int):
    """Add re-rated cost differences to their windows (inside the caller's transaction): the next
    seal reports them as new entries of those windows, with the next seal number's identifier."""
    sums: dict[tuple, list] = {}
    for start, delta in deltas:
        epoch = start.timestamp()
        window = datetime.fromtimestamp(epoch - epoch % window_s, UTC)
        sums.setdefault((tenant_id, window), [Decimal(0)])[0] += delta
    columns = columns_of(sums)
    if columns:
        conn.execute(_ADJUST_SQL, columns)
