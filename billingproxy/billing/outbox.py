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
from datetime import UTC, datetime, timedelta
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
    "STRIPE_MAX_AGE",
    "Entry",
    "OutboxStatus",
    "WindowDelta",
    "closed_before",
    "event_timestamp",
    "identifier",
    "plan_entries",
    "seal",
]

# Stripe takes meter events up to 35 days old (docs.stripe.com/billing/subscriptions/usage-based/
# recording-usage-api, "Event timestamps"); a window older than that when it is sealed is sealed
# at the oldest timestamp Stripe still takes, an hour of margin included.
STRIPE_MAX_AGE = timedelta(days=35) - timedelta(hours=1)


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
    """One meter event, every parameter fixed: a retry sends exactly the same request."""

    identifier: str
    tenant_id: str
    customer_id: str
    meter: str
    window_start: datetime  # the usage window it reports (kept even when the entry is late)
    value: int
    timestamp: int = 0  # the event timestamp sent (Unix s); 0: the window's start
    late: bool = False  # placed in the open billing period: its own period's invoice was final

    @property
    def event_timestamp(self) -> int:
        return self.timestamp or int(self.window_start.timestamp())


def event_timestamp(window_start: datetime, sealed_at: datetime) -> int:
    """The timestamp an entry sealed at ``sealed_at`` is sent with, fixed for all its tries."""
    return int(max(window_start, sealed_at - STRIPE_MAX_AGE).timestamp())


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
    sealed_at: datetime | None = None,
) -> tuple[list[Entry], dict[str, tuple[Decimal, int]]]:
    """The entries for a tenant's window deltas (in window order) and the updated carries.

    Pure: the property tests drive it directly.
    """
    sealed_at = sealed_at or datetime.now(UTC)
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
                        event_timestamp(delta.window_start, sealed_at),
                    )
                )
        carries[meter.event_name] = (accrued, reported)
    return entries, carries


_INSERT_ENTRY = """
INSERT INTO billing_outbox (identifier, tenant_id, customer_id, meter, window_start, value, event_timestamp)
VALUES (%s, %s, %s, %s, %s, %s, %s)"""

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
        tenant = cur.execute("SELECT stripe_customer_id FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        customer = tenant and tenant["stripe_customer_id"]
        if not customer:
            if customer_required:
                return []
            customer = tenant_id
        # Rate cards (the price book) are already in each row's cost: no markup is applied here.
        multiplier = Decimal(1)
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
            [
                (e.identifier, e.tenant_id, e.customer_id, e.meter, e.window_start, e.value, e.event_timestamp)
                for e in entries
            ],
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
                  event_timestamp, late,
                  attempts > 0 AND created_at < now() - make_interval(secs => %s) AS stale
           FROM billing_outbox
           WHERE customer_id = %s AND status = %s AND next_attempt_at <= now()
           ORDER BY id LIMIT %s""",
        (stale_after_s, customer, S.PENDING.value, limit),
    ).fetchall()


def entry_of(row: dict[str, Any]) -> Entry:
    return Entry(
        row["identifier"],
        row["tenant_id"],
        row["customer_id"],
        row["meter"],
        row["window_start"],
        row["value"],
        row["event_timestamp"],
        row["late"],
    )


def place_late(conn: psycopg.Connection, entry_id: int, timestamp: int) -> bool:
    """Re-seal a never-tried entry into the open billing period (its own period's invoice is
    final). Only before the first try: once a request went out its parameters never change."""
    row = conn.execute(
        """UPDATE billing_outbox SET event_timestamp = %s, late = true
           WHERE id = %s AND attempts = 0 AND status = %s RETURNING id""",
        (timestamp, entry_id, S.PENDING.value),
    ).fetchone()
    return row is not None


def count_attempt(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    """Counted before the call: an entry whose outcome is unknown has attempts > 0."""
    conn.execute(
        "UPDATE billing_outbox SET attempts = attempts + 1, last_attempt_at = now() WHERE id = ANY(%s)", (list(ids),)
    )


def mark_sent(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute(
        "UPDATE billing_outbox SET status = %s, sent_at = now(), last_error = NULL WHERE id = ANY(%s)",
        (S.SENT.value, list(ids)),
    )


def mark_failed(conn: psycopg.Connection, ids: Sequence[int], error: str) -> None:
    conn.execute(
        "UPDATE billing_outbox SET status = %s, last_error = %s WHERE id = ANY(%s)", (S.FAILED.value, error, list(ids))
    )


def mark_for_reconcile(conn: psycopg.Connection, ids: Sequence[int], error: str | None = None) -> None:
    """Never resent: reconciliation compares Stripe's summaries and posts a correction if needed."""
    conn.execute(
        "UPDATE billing_outbox SET status = %s, last_error = coalesce(%s, last_error) WHERE id = ANY(%s)",
        (S.RECONCILE.value, error, list(ids)),
    )


def defer(conn: psycopg.Connection, ids: Sequence[int], error: str, delay_s: float) -> None:
    conn.execute(
        """UPDATE billing_outbox SET next_attempt_at = now() + make_interval(secs => %s), last_error = %s
           WHERE id = ANY(%s)""",
        (delay_s, error, list(ids)),
    )


def mark_refused_by_sink(conn: psycopg.Connection, identifier: str, error: str) -> int:
    """The sink reported (after accepting it) that it refused this event: a meter error report.
    Returns 1 if the entry was not marked failed already."""
    rows = conn.execute(
        """UPDATE billing_outbox SET status = %s, last_error = %s
           WHERE identifier = %s AND status NOT IN (%s, %s) RETURNING id""",
        (S.FAILED.value, error, identifier, S.CANCELLED.value, S.FAILED.value),
    ).fetchall()
    return len(rows)


def mark_meter_errors(
    conn: psycopg.Connection, meter: str, tried_from: datetime, tried_to: datetime, error: str
) -> int:
    """A meter error report covers a meter and the time Stripe validated events in; every entry
    of that meter tried in that range may be one of the refused ones (the report names samples
    only). They become ``failed``; reconciliation then settles each hour: back to ``sent`` where
    Stripe's summary holds everything, a correction where it falls short."""
    rows = conn.execute(
        """UPDATE billing_outbox SET status = %s, last_error = %s
           WHERE meter = %s AND status IN (%s, %s) AND attempts > 0
             AND last_attempt_at >= %s AND last_attempt_at < %s
           RETURNING id""",
        (S.FAILED.value, error, meter, S.SENT.value, S.PENDING.value, tried_from, tried_to),
    ).fetchall()
    return len(rows)


# ---- reconciliation's reads and writes ----------------------------------------------------

# Stripe files an event under its timestamp, so reconciliation groups by the hour of the
# timestamp sent (not the usage window: a late entry or a window sealed at Stripe's 35-day
# limit lands in a later hour than its window).
_EVENT_HOUR = "date_trunc('hour', to_timestamp(event_timestamp))"


def expected_by_hour(
    conn: psycopg.Connection, start: datetime, end: datetime, customer: str | None
) -> list[dict[str, Any]]:
    """Per customer, meter and event hour: what the relay tried to deliver (``expected``), what of
    it is still pending after a try of unknown outcome (``in_doubt``) and when the hour last
    changed in Stripe's view (``last_activity``: the latest send or try, fixes included)."""
    return conn.execute(
        f"""SELECT customer_id, meter, {_EVENT_HOUR} AS hour,
                  coalesce(sum(value) FILTER (WHERE status <> %(pending)s AND kind = 'usage'), 0)::bigint
                      AS expected,
                  coalesce(sum(value) FILTER (WHERE status = %(pending)s AND attempts > 0 AND kind = 'usage'), 0)
                      ::bigint AS in_doubt,
                  max(greatest(sent_at, last_attempt_at)) AS last_activity
           FROM billing_outbox
           WHERE status = ANY(%(counted)s)
             AND event_timestamp >= %(start)s AND event_timestamp < %(end)s
             AND (%(customer)s::text IS NULL OR customer_id = %(customer)s)
           GROUP BY 1, 2, 3""",  # noqa: S608 - a constant expression, values are parameters
        {
            "pending": S.PENDING.value,
            "counted": [s.value for s in (S.SENT, S.FAILED, S.RECONCILE, S.RECONCILED, S.PENDING)],
            "start": int(start.timestamp()),
            "end": int(end.timestamp()),
            "customer": customer,
        },
    ).fetchall()


def record_fix(conn: psycopg.Connection, entry: Entry) -> None:
    """A correction reconciliation posted (already sent), attributed to the customer's tenant."""
    conn.execute(
        """INSERT INTO billing_outbox (identifier, kind, tenant_id, customer_id, meter, window_start, value,
                                      event_timestamp, status, attempts, sent_at, last_attempt_at)
           SELECT %s, 'fix', coalesce(t.id, ''), %s, %s, %s, %s, %s, %s, 1, now(), now()
           FROM (SELECT NULL) AS one LEFT JOIN tenants t ON t.stripe_customer_id = %s
           ON CONFLICT (identifier) DO NOTHING""",
        (
            entry.identifier,
            entry.customer_id,
            entry.meter,
            entry.window_start,
            entry.value,
            entry.event_timestamp,
            S.SENT.value,
            entry.customer_id,
        ),
    )


def recent_fixes(conn: psycopg.Connection, customer: str, meter: str, hour: datetime) -> list[dict[str, Any]]:
    """Our sent corrections for the hour still inside Stripe's 24 h adjustment window, newest first."""
    return conn.execute(
        f"""SELECT id, identifier, value FROM billing_outbox
           WHERE kind = 'fix' AND status = %s AND customer_id = %s AND meter = %s
             AND {_EVENT_HOUR} = %s AND sent_at > now() - interval '23 hours'
           ORDER BY sent_at DESC""",  # noqa: S608 - a constant expression, values are parameters
        (S.SENT.value, customer, meter, hour),
    ).fetchall()


def mark_cancelled(conn: psycopg.Connection, entry_id: int) -> None:
    conn.execute("UPDATE billing_outbox SET status = %s WHERE id = %s", (S.CANCELLED.value, entry_id))


def settle_hour(conn: psycopg.Connection, customer: str, meter: str, hour: datetime, status: OutboxStatus) -> None:
    """Entries in doubt or failed in this hour get their final status: ``sent`` when Stripe's
    summary holds everything, ``reconciled`` once a correction covers them."""
    conn.execute(
        """UPDATE billing_outbox SET status = %s
           WHERE kind = 'usage' AND customer_id = %s AND meter = %s AND status = ANY(%s)
             AND event_timestamp >= %s AND event_timestamp < %s""",
        (
            status.value,
            customer,
            meter,
            [S.RECONCILE.value, S.FAILED.value],
            int(hour.timestamp()),
            int((hour + timedelta(hours=1)).timestamp()),
        ),
    )


# ---- late usage ---------------------------------------------------------------------------


def late_entries(conn: psycopg.Connection, since: datetime, customer: str | None = None) -> list[dict[str, Any]]:
    """Entries placed in a later billing period than their usage window, windows since ``since``."""
    return conn.execute(
        """SELECT identifier, tenant_id, customer_id, meter, window_start, to_timestamp(event_timestamp) AS posted_as,
                  value, status, sent_at
           FROM billing_outbox
           WHERE late AND window_start >= %s AND (%s::text IS NULL OR customer_id = %s)
           ORDER BY window_start, id""",
        (since, customer, customer),
    ).fetchall()
