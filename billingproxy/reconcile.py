"""Reconciliation: the database's sealed entries against Stripe's meter event summaries.

Per customer, meter and hour, ``expected`` is the sum of the usage entries the relay has tried to
deliver (sent, failed, in doubt); Stripe's hourly summary should equal it, give or take entries
still ``pending`` after a try whose outcome is unknown (the relay will confirm those). With
``fix``, a shortfall is posted as a correction event with a deterministic identifier (re-running
the fix cannot post it twice) and an excess is taken back by cancelling our own corrections made
inside the last 24 h (Stripe's adjustment window); anything else needs a manual credit note.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import stripe
from psycopg.rows import dict_row

from billingproxy.outbox import Entry
from billingproxy.relay import CUSTOMER_LOCK
from billingproxy.sinks import SinkError, StripeSink

log = logging.getLogger("billingproxy.reconcile")
HOUR = timedelta(hours=1)

_EXPECTED = """
SELECT customer_id, meter, date_trunc('hour', window_start) AS hour,
       coalesce(sum(value) FILTER (WHERE status <> 'pending'), 0)::bigint AS expected,
       coalesce(sum(value) FILTER (WHERE status = 'pending' AND attempts > 0), 0)::bigint AS in_doubt
FROM billing_outbox
WHERE kind = 'usage' AND status IN ('sent', 'failed', 'reconcile', 'reconciled', 'pending')
  AND window_start >= %(start)s AND window_start < %(end)s
  AND (%(customer)s::text IS NULL OR customer_id = %(customer)s)
GROUP BY 1, 2, 3"""


@dataclass
class Difference:
    customer_id: str
    meter: str
    hour: datetime
    expected: int
    in_doubt: int
    reported: int
    action: str = ""

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.reported)

    @property
    def excess(self) -> int:
        return max(0, self.reported - self.expected - self.in_doubt)

    def to_json(self) -> dict:
        return {
            "customer_id": self.customer_id,
            "meter": self.meter,
            "hour": self.hour.isoformat(),
            "expected": self.expected,
            "in_doubt": self.in_doubt,
            "reported": self.reported,
            "difference": self.reported - self.expected,
            "action": self.action,
        }


def hour_floor(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_ceil(ts: datetime) -> datetime:
    floor = hour_floor(ts)
    return floor if floor == ts else floor + HOUR


def fix_identifier(customer: str, meter: str, hour: datetime, expected: int, reported: int) -> str:
    """The same shortfall always gets the same identifier: a repeated fix is deduplicated."""
    key = f"{customer}\x00{meter}\x00{hour.isoformat()}\x00{expected}\x00{reported}"
    return f"bp-fix-{hour:%Y%m%dT%H}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class Reconciler:
    def __init__(self, dsn: str, client: stripe.StripeClient) -> None:
        self.dsn = dsn
        self.client = client
        self.sink = StripeSink(client)
        self._meter_ids: dict[str, str] | None = None

    def meter_id(self, event_name: str) -> str:
        if self._meter_ids is None:
            meters = self.client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter()
            self._meter_ids = {meter.event_name: meter.id for meter in meters}
        if event_name not in self._meter_ids:
            raise LookupError(f"Stripe has no meter for event name {event_name!r}")
        return self._meter_ids[event_name]

    def reported(self, meter: str, customer: str, start: datetime, end: datetime) -> dict[datetime, int]:
        """Stripe's hourly totals for one customer and meter over [start, end)."""
        summaries = self.client.v1.billing.meters.event_summaries.list(
            self.meter_id(meter),
            params={
                "customer": customer,
                "start_time": int(start.timestamp()),
                "end_time": int(end.timestamp()),
                "value_grouping_window": "hour",
                "limit": 100,
            },
        ).auto_paging_iter()
        totals: dict[datetime, int] = defaultdict(int)
        for summary in summaries:
            hour = datetime.fromtimestamp(summary.start_time, UTC)
            totals[hour] += int(Decimal(str(summary.aggregated_value)))
        return totals

    def run(
        self, start: datetime, end: datetime, *, fix: bool = False, customer: str | None = None
    ) -> list[Difference]:
        """The differences over [start, end) (widened to whole hours), fixed when asked."""
        start, end = hour_floor(start), hour_ceil(end)
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute(_EXPECTED, {"start": start, "end": end, "customer": customer}).fetchall()
            buckets: dict[tuple[str, str], dict[datetime, dict]] = defaultdict(dict)
            for row in rows:
                buckets[(row["customer_id"], row["meter"])][row["hour"]] = row
            differences: list[Difference] = []
            for (customer_id, meter), hours in sorted(buckets.items()):
                # The relay's lock: no entry of this customer is in flight while we compare.
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (CUSTOMER_LOCK, customer_id))
                try:
                    differences.extend(self._compare(conn, customer_id, meter, hours, start, end, fix))
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CUSTOMER_LOCK, customer_id))
        return differences

    def _compare(
        self,
        conn: psycopg.Connection,
        customer: str,
        meter: str,
        hours: dict[datetime, dict],
        start: datetime,
        end: datetime,
        fix: bool,
    ) -> list[Difference]:
        reported = self.reported(meter, customer, start, end)
        differences = []
        for hour in sorted(set(hours) | set(reported)):
            row = hours.get(hour, {"expected": 0, "in_doubt": 0})
            diff = Difference(customer, meter, hour, row["expected"], row["in_doubt"], reported.get(hour, 0))
            if not diff.missing and not diff.excess:
                # Stripe has everything: entries in doubt past the dedup window are confirmed.
                self._settle(conn, customer, meter, hour, "sent")
                continue
            if fix:
                diff.action = self._fix(conn, diff)
            differences.append(diff)
            log.warning("billing difference", extra={"difference": diff.to_json()})
        return differences

    def _fix(self, conn: psycopg.Connection, diff: Difference) -> str:
        if diff.missing:
            entry = Entry(
                fix_identifier(diff.customer_id, diff.meter, diff.hour, diff.expected, diff.reported),
                "",
                diff.customer_id,
                diff.meter,
                diff.hour,
                diff.missing,
            )
            try:
                self.sink.post([entry])
            except SinkError as exc:
                return f"fix failed: {exc}"
            conn.execute(
                """INSERT INTO billing_outbox (identifier, kind, tenant_id, customer_id, meter, window_start, value,
                                              status, attempts, sent_at)
                   SELECT %s, 'fix', coalesce(t.id, ''), %s, %s, %s, %s, 'sent', 1, now()
                   FROM (SELECT NULL) AS one LEFT JOIN tenants t ON t.stripe_customer_id = %s
                   ON CONFLICT (identifier) DO NOTHING""",
                (entry.identifier, diff.customer_id, diff.meter, diff.hour, diff.missing, diff.customer_id),
            )
            self._settle(conn, diff.customer_id, diff.meter, diff.hour, "reconciled")
            return f"posted {diff.missing}"
        return self._cancel_excess(conn, diff)

    def _cancel_excess(self, conn: psycopg.Connection, diff: Difference) -> str:
        """Cancel our own corrections (newest first) that fit inside the excess."""
        remaining = diff.excess
        cancelled = 0
        fixes = conn.execute(
            """SELECT id, identifier, value FROM billing_outbox
               WHERE kind = 'fix' AND status = 'sent' AND customer_id = %s AND meter = %s
                 AND window_start = %s AND sent_at > now() - interval '23 hours'
               ORDER BY sent_at DESC""",
            (diff.customer_id, diff.meter, diff.hour),
        ).fetchall()
        for row in fixes:
            if row["value"] > remaining:
                continue
            self.client.v1.billing.meter_event_adjustments.create(
                params={"event_name": diff.meter, "type": "cancel", "cancel": {"identifier": row["identifier"]}}
            )
            conn.execute("UPDATE billing_outbox SET status = 'cancelled' WHERE id = %s", (row["id"],))
            remaining -= row["value"]
            cancelled += row["value"]
        if remaining:
            return f"cancelled {cancelled}; {remaining} over-reported needs a manual credit"
        return f"cancelled {cancelled}"

    @staticmethod
    def _settle(conn: psycopg.Connection, customer: str, meter: str, hour: datetime, status: str) -> None:
        """Entries in doubt (or failed, once a fix covers them) in this hour get their final status."""
        targets = ("reconcile",) if status == "sent" else ("reconcile", "failed")
        conn.execute(
            """UPDATE billing_outbox SET status = %s
               WHERE kind = 'usage' AND customer_id = %s AND meter = %s AND status = ANY(%s)
                 AND window_start >= %s AND window_start < %s""",
            (status, customer, meter, list(targets), hour, hour + HOUR),
        )
