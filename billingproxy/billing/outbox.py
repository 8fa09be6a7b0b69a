"""The billing outbox: closed usage windows sealed into immutable entries, one per meter, and
every change of an entry's status. The only module that writes ``billing_outbox`` and
``billing_carry``.

The proxies' writers add billable usage to ``billing_accrual`` in the same transaction that
stores the usage rows, so nothing billable can be stored without being accrued. Sealing turns a
closed window's not-yet-reported totals into outbox entries with deterministic identifiers;
a window that receives rows after it was sealed (a replayed spill file) is sealed again, and the
new entry reports only the difference (``seal`` number 1, 2, … in the identifier).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billingproxy.billing.meters import MICRO, Meter, carry, measure
from billingproxy.db import SEAL_LOCK
from billingproxy.metering import WindowDelta, accrual

__all__ = [
    "MICRO",
    "Entry",
    "OutboxStatus",
    "WindowDelta",
    "closed_before",
    "identifier",
    "plan_entries",
    "seal",
]


class OutboxStatus(StrEnum):
    """An entry's life: pending → sent, or → failed (refused) / reconcile (unconfirmed for too long)
    → reconciled; a correction of ours taken back is cancelled."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    RECONCILE = "reconcile"
    RECONCILED = "reconciled"
    CANCELLED = "cancelled"


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
    tenants = accrual.tenants_due(conn, before)
    conn.commit()
    for tenant_id in tenants:
        sealed.extend(_seal_tenant(conn, tenant_id, meters, before, customer_required))
    return sealed


def _seal_tenant(
    conn: psycopg.Connection, tenant_id: str, meters: tuple[Meter, ...], before: datetime, customer_required: bool
) -> list[Entry]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SEAL_LOCK, tenant_id))
        tenant = cur.execute(
            "SELECT stripe_customer_id, price_multiplier FROM tenants WHERE id = %s", (tenant_id,)
        ).fetchone()
        customer = tenant and tenant["stripe_customer_id"]
        if not customer:
            if customer_required:
                return []
            customer = tenant_id
        multiplier = tenant["price_multiplier"] if tenant else Decimal(1)
        deltas = accrual.open_deltas(cur, tenant_id, before)
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
        accrual.mark_sealed(cur, tenant_id, deltas)
        cur.executemany(_SAVE_CARRY, [(tenant_id, meter, *state) for meter, state in carries.items()])
    return entries


def closed_before(now: datetime, window_s: int, grace_s: float) -> datetime:
    """Windows starting before this have closed, ``grace_s`` ago (late batches have landed)."""
    return now - timedelta(seconds=window_s + grace_s)


# ---- the relay's reads and writes ---------------------------------------------------------

S = OutboxStatus


def customers_due(conn: psycopg.Connection) -> list[str]:
    """Customers with entries due for posting now."""
    rows = conn.execute(
        "SELECT DISTINCT customer_id FROM billing_outbox WHERE status = %s AND next_attempt_at <= now()",
        (S.PENDING.value,),
    ).fetchall()
    return [row["customer_id"] for row in rows]


def due_entries(conn: psycopg.Connection, customer: str, limit: int, stale_after_s: float) -> list[dict[str, Any]]:
    """The customer's next due entries, oldest first; ``stale``: tried, unconfirmed for too long."""
    return conn.execute(
        """SELECT id, identifier, tenant_id, customer_id, meter, window_start, value, attempts,
                  attempts > 0 AND created_at < now() - make_interval(secs => %s) AS stale
           FROM billing_outbox
           WHERE customer_id = %s AND status = %s AND next_attempt_at <= now()
           ORDER BY id LIMIT %s""",
        (stale_after_s, customer, S.PENDING.value, limit),
    ).fetchall()


def entry_of(row: dict[str, Any]) -> Entry:
    return Entry(
        row["identifier"], row["tenant_id"], row["customer_id"], row["meter"], row["window_start"], row["value"]
    )


def count_attempt(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    """Counted before the call: an entry whose outcome is unknown has attempts > 0."""
    conn.execute("UPDATE billing_outbox SET attempts = attempts + 1 WHERE id = ANY(%s)", (list(ids),))


def mark_sent(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute(
        "UPDATE billing_outbox SET status = %s, sent_at = now(), last_error = NULL WHERE id = ANY(%s)",
        (S.SENT.value, list(ids)),
    )


def mark_failed(conn: psycopg.Connection, ids: Sequence[int], error: str) -> None:
    conn.execute(
        "UPDATE billing_outbox SET status = %s, last_error = %s WHERE id = ANY(%s)", (S.FAILED.value, error, list(ids))
    )


def mark_for_reconcile(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute("UPDATE billing_outbox SET status = %s WHERE id = ANY(%s)", (S.RECONCILE.value, list(ids)))


def defer(conn: psycopg.Connection, ids: Sequence[int], error: str, delay_s: float) -> None:
    conn.execute(
        """UPDATE billing_outbox SET next_attempt_at = now() + make_interval(secs => %s), last_error = %s
           WHERE id = ANY(%s)""",
        (delay_s, error, list(ids)),
    )


def mark_refused_by_sink(conn: psycopg.Connection, identifier: str, error: str) -> None:
    """The sink reported (after accepting it) that it refused this event: a meter error report."""
    conn.execute(
        "UPDATE billing_outbox SET status = %s, last_error = %s WHERE identifier = %s AND status <> %s",
        (S.FAILED.value, error, identifier, S.CANCELLED.value),
    )


# ---- reconciliation's reads and writes ----------------------------------------------------


def expected_by_hour(
    conn: psycopg.Connection, start: datetime, end: datetime, customer: str | None
) -> list[dict[str, Any]]:
    """Per customer, meter and hour: what the relay tried to deliver (``expected``) and what of it
    is still pending after a try of unknown outcome (``in_doubt``)."""
    return conn.execute(
        """SELECT customer_id, meter, date_trunc('hour', window_start) AS hour,
                  coalesce(sum(value) FILTER (WHERE status <> %(pending)s), 0)::bigint AS expected,
                  coalesce(sum(value) FILTER (WHERE status = %(pending)s AND attempts > 0), 0)::bigint AS in_doubt
           FROM billing_outbox
           WHERE kind = 'usage' AND status = ANY(%(counted)s)
             AND window_start >= %(start)s AND window_start < %(end)s
             AND (%(customer)s::text IS NULL OR customer_id = %(customer)s)
           GROUP BY 1, 2, 3""",
        {
            "pending": S.PENDING.value,
            "counted": [s.value for s in (S.SENT, S.FAILED, S.RECONCILE, S.RECONCILED, S.PENDING)],
            "start": start,
            "end": end,
            "customer": customer,
        },
    ).fetchall()


def record_fix(conn: psycopg.Connection, entry: Entry) -> None:
    """A correction reconciliation posted (already sent), attributed to the customer's tenant."""
    conn.execute(
        """INSERT INTO billing_outbox (identifier, kind, tenant_id, customer_id, meter, window_start, value,
                                      status, attempts, sent_at)
           SELECT %s, 'fix', coalesce(t.id, ''), %s, %s, %s, %s, %s, 1, now()
           FROM (SELECT NULL) AS one LEFT JOIN tenants t ON t.stripe_customer_id = %s
           ON CONFLICT (identifier) DO NOTHING""",
        (
            entry.identifier,
            entry.customer_id,
            entry.meter,
            entry.window_start,
            entry.value,
            S.SENT.value,
            entry.customer_id,
        ),
    )


def recent_fixes(conn: psycopg.Connection, customer: str, meter: str, hour: datetime) -> list[dict[str, Any]]:
    """Our sent corrections for the hour still inside Stripe's 24 h adjustment window, newest first."""
    return conn.execute(
        """SELECT id, identifier, value FROM billing_outbox
           WHERE kind = 'fix' AND status = %s AND customer_id = %s AND meter = %s
             AND window_start = %s AND sent_at > now() - interval '23 hours'
           ORDER BY sent_at DESC""",
        (S.SENT.value, customer, meter, hour),
    ).fetchall()


def mark_cancelled(conn: psycopg.Connection, entry_id: int) -> None:
    conn.execute("UPDATE billing_outbox SET status = %s WHERE id = %s", (S.CANCELLED.value, entry_id))


def settle_hour(conn: psycopg.Connection, customer: str, meter: str, hour: datetime, status: OutboxStatus) -> None:
    """Entries in doubt (or failed, once a fix covers them) in this hour get their final status."""
    targets = (S.RECONCILE,) if status is S.SENT else (S.RECONCILE, S.FAILED)
    conn.execute(
        """UPDATE billing_outbox SET status = %s
           WHERE kind = 'usage' AND customer_id = %s AND meter = %s AND status = ANY(%s)
             AND window_start >= %s AND window_start < %s""",
        (status.value, customer, meter, [t.value for t in targets], hour, hour + timedelta(hours=1)),
    )
