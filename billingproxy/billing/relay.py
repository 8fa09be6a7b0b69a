"""The relay: seals closed usage windows and posts the outbox to the billing sink.

``python -m billingproxy stripe relay`` runs one pass (a Cloud Run job every minute) or loops.
Several relays may run at once: sealing takes a per-tenant lock, and posting takes a per-customer
session lock (``pg_try_advisory_lock``), so each customer has exactly one relay posting for it,
one call at a time (Stripe allows one concurrent meter-event call per customer). A relay that
dies mid-post releases its locks with its connection; the next pass re-posts the unconfirmed
entry with the same idempotency key, which Stripe answers from its idempotency cache.

An entry that was tried and is still unconfirmed after ``reconcile_after_s`` (23 h: Stripe's
identifier dedup lasts 24 h) is never resent blindly: it is marked ``reconcile`` and settled by
comparing Stripe's event summaries with the database (``billingproxy.billing.reconcile``). So is
an entry whose key Stripe answers with a saved error: resending the same request achieves nothing.

Before its first try an entry may be held (its meter fails ``stripe check``: an ERROR line, the
entry waits, nothing is posted to a meter that would bill the wrong amount) or placed into the
open billing period (``late``: its own period's invoice was already final, so Stripe would count
it and never invoice it). After the first try no parameter of an entry ever changes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from billingproxy import db
from billingproxy.billing import outbox
from billingproxy.billing.outbox import closed_before, seal
from billingproxy.billing.sinks import PermanentSinkError, Preparation, Sink, TransientSinkError, UnsettledSinkError
from billingproxy.config import BillingSettings
from billingproxy.db import CUSTOMER_POST_LOCK

__all__ = ["Relay", "RelayStats", "backoff_s"]

log = logging.getLogger("billingproxy.relay")

MAX_DEFER_S = 600.0
HOLD_S = 60.0  # a held entry is looked at again after this (the check is cached for 5 minutes)


def backoff_s(attempt: int, base_s: float, cap_s: float = MAX_DEFER_S) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 30)))  # noqa: S311 - jitter, not crypto


@dataclass
class RelayStats:
    sealed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    to_reconcile: int = 0
    held: int = 0
    late: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def to_json(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class Relay:
    def __init__(self, dsn: str, sink: Sink, settings: BillingSettings) -> None:
        self.dsn = dsn
        self.sink = sink
        self.settings = settings

    def run_once(self, *, now: datetime | None = None) -> RelayStats:
        """Seal closed windows, then post every due entry."""
        stats = RelayStats()
        before = closed_before(now or datetime.now(UTC), self.settings.window_s, self.settings.grace_s)
        with db.connect(self.dsn) as conn:
            stats.sealed = len(
                seal(conn, self.settings.meters, before=before, customer_required=self.sink.customer_required)
            )
            customers = outbox.customers_due(conn)
        if customers:
            workers = min(self.settings.relay_concurrency, len(customers))
            with ThreadPoolExecutor(workers, thread_name_prefix="relay") as pool:
                list(pool.map(lambda customer: self._drain(customer, stats), customers))
        log.info("relay pass", extra={"relay": stats.to_json(), "sink": self.sink.name})
        return stats

    def run_forever(self, interval_s: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.run_once()
            except (psycopg.Error, OSError) as exc:
                log.error("relay pass failed; retrying", extra={"error": str(exc)})
            stop.wait(interval_s)

    # ---- one customer -----------------------------------------------------------------------

    def _drain(self, customer: str, stats: RelayStats) -> None:
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            locked = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", (CUSTOMER_POST_LOCK, customer))
            if not locked.fetchone()["ok"]:
                return  # another relay is posting for this customer
            try:
                while self._post_batch(conn, customer, stats):
                    pass
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CUSTOMER_POST_LOCK, customer))

    def _post_batch(self, conn: psycopg.Connection, customer: str, stats: RelayStats) -> bool:
        """Post the customer's next due entries; False when none are left or the sink pushes back."""
        rows = outbox.due_entries(conn, customer, self.sink.max_batch, self.settings.reconcile_after_s)
        stale = [row["id"] for row in rows if row["stale"]]
        if stale:
            outbox.mark_for_reconcile(conn, stale)
            stats.add(to_reconcile=len(stale))
            log.warning("entries unconfirmed too long; left to reconcile", extra={"entries": len(stale)})
        rows = [row for row in rows if not row["stale"]]
        if not rows:
            return bool(stale)  # only stale ones this time: look at the next entries
        rows = self._prepare(conn, customer, rows, stats)
        if rows is None:
            return False
        if not rows:
            return True
        ids = [row["id"] for row in rows]
        entries = [outbox.entry_of(row) for row in rows]
        for attempt in range(self.settings.relay_tries):
            outbox.count_attempt(conn, ids)
            stats.add(calls=1)
            try:
                self.sink.post(entries)
            except TransientSinkError as exc:
                if attempt + 1 < self.settings.relay_tries:
                    time.sleep(exc.retry_after_s or backoff_s(attempt, self.settings.relay_backoff_s))
                    continue
                delay = max(
                    exc.retry_after_s or 0, backoff_s(rows[0]["attempts"] + attempt + 3, self.settings.relay_backoff_s)
                )
                outbox.defer(conn, ids, str(exc), delay)
                stats.add(deferred=len(ids))
                return False
            except UnsettledSinkError as exc:
                outbox.mark_for_reconcile(conn, ids, str(exc))
                stats.add(to_reconcile=len(ids))
                log.warning(
                    "saved error for these entries' keys; left to reconcile",
                    extra={"identifiers": [e.identifier for e in entries], "error": str(exc)},
                )
                return True
            except PermanentSinkError as exc:
                outbox.mark_failed(conn, ids, str(exc))
                stats.add(failed=len(ids))
                log.error(
                    "billing sink refused entries",
                    extra={"identifiers": [e.identifier for e in entries], "error": str(exc)},
                )
                return True
            outbox.mark_sent(conn, ids)
            stats.add(sent=len(ids))
            return True
        return False

    def _prepare(
        self, conn: psycopg.Connection, customer: str, rows: list[dict], stats: RelayStats
    ) -> list[dict] | None:
        """Hold or place entries before their first try; the rows left to post (None: Stripe could
        not be asked, the rows wait for a later pass)."""
        entries = [outbox.entry_of(row) for row in rows]
        untried = {row["identifier"] for row in rows if row["attempts"] == 0}
        try:
            preparation: Preparation = self.sink.prepare(customer, entries, untried)
        except TransientSinkError as exc:
            outbox.defer(conn, [row["id"] for row in rows], str(exc), HOLD_S)
            stats.add(deferred=len(rows))
            log.warning("could not check the billing account; entries wait", extra={"error": str(exc)})
            return None
        if preparation.held:
            held = [row for row in rows if row["identifier"] in preparation.held]
            for reason in sorted(set(preparation.held.values())):
                ids = [row["id"] for row in held if preparation.held[row["identifier"]] == reason]
                outbox.defer(conn, ids, f"held: {reason}", HOLD_S)
            stats.add(held=len(held))
            log.error(
                "entries held: the meter would bill the wrong amount (see `stripe check`)",
                extra={"identifiers": sorted(preparation.held), "problems": sorted(set(preparation.held.values()))},
            )
        posting = []
        for row in rows:
            if row["identifier"] in preparation.held:
                continue
            timestamp = preparation.placed.get(row["identifier"])
            if timestamp is not None and outbox.place_late(conn, row["id"], timestamp):
                row = {**row, "event_timestamp": timestamp, "late": True}
                stats.add(late=1)
                log.warning(
                    "late usage: its billing period is already invoiced; posted into the open period",
                    extra={"identifier": row["identifier"], "window_start": row["window_start"].isoformat()},
                )
            posting.append(row)
        return posting
