"""``usage audit``: every admitted request is on the ledger.

Reads our stdout lines (NDJSON exports of the proxies' logs), finds the requests admitted in
[since, until) that have neither a request line in the files nor a row, and writes each as an
``interrupted`` row (``admitted.interrupted_record``). Idempotent: a second run finds them stored.
Run it over a window whose requests have all finished (``until`` at least the longest request
timeout in the past): an instance still serving a request would otherwise write its real row
beside the interrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from billingproxy.metering.admitted import interrupted_record, read_admitted
from billingproxy.metering.log_export import read_path
from billingproxy.metering.pricing import PriceTable
from billingproxy.metering.replay import replay_records

__all__ = ["AuditResult", "audit_files"]


@dataclass(frozen=True)
class AuditResult:
    admitted: int  # admitted lines in the window
    completed: int  # of those, with a request line or a row
    interrupted: int  # rows newly written as interrupted


def _stored_ids(dsn: str, ids: Iterable[str]) -> set[str]:
    ids = list(ids)
    if not ids:
        return set()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT request_id FROM litellm_usage WHERE request_id = ANY(%s)", (ids,)).fetchall()
    return {row[0] for row in rows}


def audit_files(
    dsn: str, paths: Iterable[str | Path], since: datetime, until: datetime, prices: PriceTable, policy: str
) -> AuditResult:
    admitted = []
    logged: set[str] = set()
    for path in paths:
        with open(path, errors="replace") as lines:
            admitted += [a for a in read_admitted(lines) if since <= a.start_time < until]
        logged |= {record.request_id for record in read_path(path).records}
    unique = {a.request_id: a for a in admitted}
    open_ids = set(unique) - logged
    open_ids -= _stored_ids(dsn, open_ids)
    records = [interrupted_record(unique[i], prices, policy) for i in sorted(open_ids)]
    _, inserted = replay_records(dsn, records)
    return AuditResult(admitted=len(unique), completed=len(unique) - len(open_ids), interrupted=inserted)
