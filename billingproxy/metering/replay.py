"""Re-ingest usage records from spill files or exported JSON log lines, idempotently."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg

from billingproxy.metering.record import UsageRecord
from billingproxy.metering.spill import read_records
from billingproxy.metering.store import UsageStore

__all__ = ["replay_files", "replay_records"]

BATCH = 1000


def replay_records(dsn: str, records: Iterable[UsageRecord]) -> tuple[int, int]:
    """Returns (records read, rows newly inserted)."""
    store = UsageStore()
    read = inserted = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        batch: list[UsageRecord] = []
        for record in records:
            batch.append(record)
            read += 1
            if len(batch) >= BATCH:
                inserted += store.write(conn, batch)
                batch = []
        inserted += store.write(conn, batch)
    return read, inserted


def replay_files(dsn: str, paths: list[Path]) -> tuple[int, int]:
    return replay_records(dsn, (record for path in paths for record in read_records(path)))
