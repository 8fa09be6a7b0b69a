"""The per-process usage writer: the request path only enqueues; a background thread writes.

* ``submit`` appends to a bounded in-memory queue and returns (microseconds, no I/O, no lock:
  ``deque.append`` is atomic).
* A writer thread writes batches of up to ``max_batch`` rows as soon as ``batch_size`` rows are
  waiting, or every ``flush_interval``. It has its own synchronous connection, so database
  waits never touch the proxy's event loop. While PostgreSQL is down or slow the queue grows;
  records past its bound go to an append-only spill file, re-ingested once the database answers.
* ``close`` (SIGTERM) flushes within the deadline; whatever cannot be written is spilled.

Nothing is dropped: a record is in the queue, in the database, or in a spill file, and writing
one twice is harmless (the primary key on request id and start time).

``on_written`` hears the request ids of every committed batch (called on the writer thread): the
budgets count a settled request as pending spend until its row is in the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import psycopg

from billingproxy.config import WriterSettings
from billingproxy.metering.record import UsageRecord
from billingproxy.metering.spill import SpillFile, read_records
from billingproxy.metering.store import UsageStore

__all__ = ["UsageWriter"]

log = logging.getLogger("billingproxy.writer")

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class UsageWriter:
    def __init__(self, dsn: str, settings: WriterSettings, store: UsageStore | None = None) -> None:
        self.dsn = dsn
        self.settings = settings
        self.store = store or UsageStore()
        self.spill = SpillFile(settings.spill_dir)
        self._queue: deque[UsageRecord] = deque()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._inflight: list[UsageRecord] = []
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failures = 0
        self.on_written: Callable[[list[str]], None] | None = None

    # ---- request path ------------------------------------------------------------------

    def submit(self, record: UsageRecord) -> None:
        if len(self._queue) >= self.settings.queue_bound:
            self.spill.append([record])
            return
        self._queue.append(record)
        if len(self._queue) == self.settings.batch_size:
            self._wakeup.set()

    # ---- background --------------------------------------------------------------------

    def start(self) -> threading.Thread:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="billingproxy-usage-writer", daemon=True)
            self._thread.start()
        return self._thread

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._inflight)

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while not self._stop.is_set():
            if len(self._queue) < self.settings.batch_size and not self._inflight:
                self._wakeup.wait(self.settings.flush_interval_s)  # a full batch or the interval
                self._wakeup.clear()
            try:
                while self.flush_once() and not self._stop.is_set():
                    pass
                self._reingest_spill()
                delay = RETRY_MIN_S
            except (psycopg.Error, OSError) as exc:
                self.failures += 1
                log.warning("usage write failed, %d rows waiting: %s", self.pending, exc)
                self._drop_connection()
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def flush_once(self) -> int:
        """Write one batch (the in-flight one first, if a previous attempt failed)."""
        if not self._inflight:
            take = min(len(self._queue), max(self.settings.max_batch, self.settings.batch_size))
            self._inflight = [self._queue.popleft() for _ in range(take)]
        if not self._inflight:
            return 0
        self.store.write(self._connection(), self._inflight)
        written = len(self._inflight)
        self.written += written
        self._committed(self._inflight)
        self._inflight = []
        return written

    def _committed(self, records: list[UsageRecord]) -> None:
        if self.on_written is not None and records:
            try:
                self.on_written([record.request_id for record in records])
            except Exception:  # the rows are written; a listener's failure must not rewrite them
                log.exception("usage writer listener failed")

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=3, application_name="billingproxy-writer"
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _reingest_spill(self) -> None:
        """Once the database answers and the queue has room, bring spilled records back."""
        self.spill.close()
        if len(self._queue) > self.settings.batch_size:
            return
        for path in self.spill.claim_closed_files():
            conn = self._connection()
            batch: list[UsageRecord] = []
            for record in read_records(path):
                batch.append(record)
                if len(batch) >= self.settings.max_batch:
                    self.store.write(conn, batch)
                    self._committed(batch)
                    batch = []
            self.store.write(conn, batch)
            self._committed(batch)
            path.unlink()
            log.info("re-ingested spill file %s", path.name)

    # ---- shutdown ----------------------------------------------------------------------

    def close(self, deadline_s: float | None = None) -> None:
        """Flush everything within the deadline; spill the rest. Safe to call twice."""
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else self.settings.shutdown_deadline_s)
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0))
            if self._thread.is_alive():  # stuck in a database call: spill; a replay dedupes
                log.warning("usage writer still busy at the deadline")
                self.spill_pending()
                return
            self._thread = None
        try:
            while self.pending and time.monotonic() < deadline:
                remaining_ms = max(int((deadline - time.monotonic()) * 1000), 1)
                self._connection().execute("SELECT set_config('statement_timeout', %s, false)", (str(remaining_ms),))
                self.flush_once()
        except (psycopg.Error, OSError) as exc:
            log.warning("usage flush at shutdown failed: %s", exc)
        self.spill_pending()
        self._drop_connection()

    def spill_pending(self) -> int:
        """Move every record still in memory to the spill file."""
        pending = self._inflight + list(self._queue)
        self._inflight = []
        self._queue.clear()
        if pending:
            self.spill.append(pending)
            log.warning("spilled %d usage rows to %s for replay", len(pending), self.settings.spill_dir)
        self.spill.close()
        return len(pending)
