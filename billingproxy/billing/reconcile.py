"""Reconciliation: the database's sealed entries against Stripe's meter event summaries.

Per customer, meter and hour, ``expected`` is the sum of the usage entries the relay has tried to
deliver (sent, failed, in doubt); Stripe's hourly summary should equal it, give or take entries
still ``pending`` after a try whose outcome is unknown (the relay will confirm those). With
``fix``, a shortfall is posted as a correction event with a deterministic identifier (re-running
the fix cannot post it twice) and an excess is taken back by cancelling our own corrections made
inside the last 24 h (Stripe's adjustment window); anything else needs a manual credit note.

Stripe's summaries are eventually consistent: they trail accepted events by an unbounded delay
(seconds to minutes). An hour is compared only once it is *settled*: it began, and nothing in it
was last sent or tried, more than ``settle`` ago (60 minutes by default). So ``--fix`` right after a
relay pass, or twice in a row, never posts what Stripe simply has not aggregated yet: a fix
makes its hour unsettled again until the fix itself shows in the summaries. Hours are those of
the event timestamps sent (a late entry counts in the hour it was posted into).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import stripe
from psycopg.rows import dict_row

from billingproxy.billing import outbox
from billingproxy.billing.outbox import Entry, OutboxStatus
from billingproxy.billing.sinks import SinkError, StripeSink
from billingproxy.db import CUSTOMER_POST_LOCK

__all__ = ["Difference", "Reconciler", "fix_identifier"]

log = logging.getLogger("billingproxy.reconcile")
HOUR = timedelta(hours=1)


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


DEFAULT_SETTLE = timedelta(minutes=60)


def fix_identifier(customer: str, meter: str, hour: datetime, expected: int, reported: int) -> str:
    """The same shortfall always gets the same identifier: a repeated fix is deduplicated."""
    key = f"{customer}\x00{meter}\x00{hour.isoformat()}\x00{expected}\x00{reported}"
    return f"bp-fix-{hour:%Y%m%dT%H}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class Reconciler:
    def __init__(self, dsn: str, client: stripe.StripeClient) -> None:
        self.dsn = dsn
        self.sink = StripeSink(client)
        self.api = self.sink.api
        self.unsettled: list[tuple[str, str, datetime]] = []  # hours the last run left for later

    def reported(self, meter: str, customer: str, start: datetime, end: datetime) -> dict[datetime, int]:
        """Stripe's hourly totals for one customer and meter over [start, end)."""
        totals: dict[datetime, int] = defaultdict(int)
        for hour, value in self.api.hourly_summaries(meter, customer, start, end):
            totals[hour] += value
        return totals

    def run(
        self,
        start: datetime,
        end: datetime,
        *,
        fix: bool = False,
        customer: str | None = None,
        settle: timedelta = DEFAULT_SETTLE,
        now: datetime | None = None,
    ) -> list[Difference]:
        """The differences over [start, end) (widened to whole hours) in settled hours, fixed when
        asked; hours not settled yet are listed in ``self.unsettled``."""
        start, end = hour_floor(start), hour_ceil(end)
        self.unsettled = []
        settled_before = (now or datetime.now(UTC)) - settle
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            rows = outbox.expected_by_hour(conn, start, end, customer)
            buckets: dict[tuple[str, str], dict[datetime, dict]] = defaultdict(dict)
            for row in rows:
                buckets[(row["customer_id"], row["meter"])][row["hour"]] = row
            differences: list[Difference] = []
            for (customer_id, meter), hours in sorted(buckets.items()):
                # The relay's lock: no entry of this customer is in flight while we compare.
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (CUSTOMER_POST_LOCK, customer_id))
                try:
                    differences.extend(self._compare(conn, customer_id, meter, hours, start, end, fix, settled_before))
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CUSTOMER_POST_LOCK, customer_id))
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
        settled_before: datetime,
    ) -> list[Difference]:
        reported = self.reported(meter, customer, start, end)
        differences = []
        for hour in sorted(set(hours) | set(reported)):
            row = hours.get(hour, {"expected": 0, "in_doubt": 0, "last_activity": None})
            last_activity = row["last_activity"]
            if hour > settled_before or (last_activity is not None and last_activity > settled_before):
                self.unsettled.append((customer, meter, hour))  # Stripe may not have aggregated it yet
                continue
            diff = Difference(customer, meter, hour, row["expected"], row["in_doubt"], reported.get(hour, 0))
            if not diff.missing and not diff.excess:
                # Stripe has everything: entries in doubt past the dedup window are confirmed.
                outbox.settle_hour(conn, customer, meter, hour, OutboxStatus.SENT)
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
            outbox.record_fix(conn, entry)
            outbox.settle_hour(conn, diff.customer_id, diff.meter, diff.hour, OutboxStatus.RECONCILED)
            return f"posted {diff.missing}"
        return self._cancel_excess(conn, diff)

    def _cancel_excess(self, conn: psycopg.Connection, diff: Difference) -> str:
        """Cancel our own corrections (newest first) that fit inside the excess."""
        remaining = diff.excess
        cancelled = 0
        for row in outbox.recent_fixes(conn, diff.customer_id, diff.meter, diff.hour):
            if row["value"] > remaining:
                continue
            self.api.cancel_meter_event(diff.meter, row["identifier"])
            outbox.mark_cancelled(conn, row["id"])
            remaining -= row["value"]
            cancelled += row["value"]
        if remaining:
            return f"cancelled {cancelled}; {remaining} over-reported needs a manual credit"
        return f"cancelled {cancelled}"
