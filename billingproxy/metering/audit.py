"""``usage audit``: every admitted request is on the ledger.

Reads our stdout lines (NDJSON exports of the proxies' logs) and puts every request admitted in
[since, until) on the ledger: one with a request line in the files gets that row (as ``usage
replay`` would), one with neither a request line nor a row is written as an ``interrupted`` row
(``admitted.interrupted_record``). Idempotent: a second run finds them stored. It names the
instances whose admitted lines it read (``instances``): their budget doubt can then be released.
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
from billingproxy.metering.record import UsageRecord
from billingproxy.metering.replay import replay_records

__all__ = ["AuditResult", "audit_files"]


@dataclass(frozen=True)
class AuditResult:
    admitted: int  # admitted lines in the window
    completed: int  # of those, with a request line or a row
    interrupted: int  # rows newly written as interrupted
    replayed: int = 0  # rows newly written from the files' request lines
    instances: tuple[str, ...] = ()  # the instances (budget holders) whose admitted lines were read


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
    logged: dict[str, UsageRecord] = {}
    for path in paths:
        with open(path, errors="replace") as lines:
            admitted += [a for a in read_admitted(lines) if since <= a.start_time < until]
        logged |= {record.request_id: record for record in read_path(path).records}
    unique = {a.request_id: a for a in admitted}
    _, replayed = replay_records(dsn, [logged[i] for i in sorted(set(unique) & set(logged))])
    open_ids = set(unique) - set(logged)
    open_ids -= _stored_ids(dsn, open_ids)
    records = [interrupted_record(unique[i], prices, policy) for i in sorted(open_ids)]
    _, inserted = replay_records(dsn, records)
    return AuditResult(
        admitted=len(unique),
        completed=len(unique) - len(open_ids),
        interrupted=inserted,
        replayed=replayed,
        instances=tuple(sorted({a.instance for a in admitted if a.instance})),
    )
