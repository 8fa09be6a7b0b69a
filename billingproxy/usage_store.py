"""Writes batches of usage records to PostgreSQL, exactly once per request.

One transaction per batch: COPY into a temp staging table, insert into ``litellm_usage`` with
``ON CONFLICT DO NOTHING`` (a replayed record is skipped), and add only the rows actually
inserted to the ``usage_daily`` rollup. A batch either lands whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from billingproxy.usage import UsageRecord

_FIELDS = [f.name for f in fields(UsageRecord)]
COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _FIELDS))

_STAGE = sql.SQL("""CREATE TEMP TABLE IF NOT EXISTS usage_stage
    ON COMMIT DELETE ROWS AS SELECT {columns} FROM litellm_usage WITH NO DATA""").format(columns=COLUMNS)

_COPY = sql.SQL("COPY usage_stage ({columns}) FROM STDIN").format(columns=COLUMNS)

_INSERT = sql.SQL("""
WITH inserted AS (
    INSERT INTO litellm_usage ({columns})
    SELECT DISTINCT ON (request_id, start_time) {columns} FROM usage_stage
    ON CONFLICT (request_id, start_time) DO NOTHING
    RETURNING *
), rolled AS (
    INSERT INTO usage_daily AS d (day, tenant_id, model, requests, failures, rejected, prompt_tokens,
                                  completion_tokens, cached_tokens, total_tokens, cost_usd)
    SELECT (start_time AT TIME ZONE 'UTC')::date, tenant_id, model, count(*),
           count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
           sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(total_tokens), sum(cost_usd)
    FROM inserted GROUP BY 1, 2, 3
    ON CONFLICT (day, tenant_id, model) DO UPDATE SET
        requests = d.requests + excluded.requests,
        failures = d.failures + excluded.failures,
        rejected = d.rejected + excluded.rejected,
        prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = d.completion_tokens + excluded.completion_tokens,
        cached_tokens = d.cached_tokens + excluded.cached_tokens,
        total_tokens = d.total_tokens + excluded.total_tokens,
        cost_usd = d.cost_usd + excluded.cost_usd
    RETURNING 1
)
SELECT count(*) AS inserted FROM inserted""").format(columns=COLUMNS)


def _month(ts: datetime) -> tuple[int, int]:
    utc = ts.astimezone(UTC)
    return utc.year, utc.month


class UsageStore:
    """Async batch writes on one dedicated connection (the caller reconnects on failure)."""

    def __init__(self) -> None:
        self._partitions: set[tuple[int, int]] = set()

    async def write(self, conn: psycopg.AsyncConnection, records: Sequence[UsageRecord]) -> int:
        """Store the batch; returns how many rows were new (the rest were already stored)."""
        if not records:
            return 0
        try:
            async with conn.transaction():
                await self._ensure_partitions(conn, records)
                await conn.execute(_STAGE)
                async with conn.cursor().copy(_COPY) as copy:
                    for record in records:
                        await copy.write_row([getattr(record, name) for name in _FIELDS])
                cursor = await conn.execute(_INSERT)
                row = await cursor.fetchone()
        except BaseException:
            self._partitions.clear()  # a partition created in the failed transaction is gone again
            raise
        return int(row[0] if isinstance(row, tuple) else row["inserted"])

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection, records: Sequence[UsageRecord]) -> None:
        """Create missing month partitions (cached: normally one check per month per process)."""
        for record in records:
            month = _month(record.start_time)
            if month not in self._partitions:
                await conn.execute("SELECT billingproxy_ensure_usage_partition(%s)", (record.start_time,))
                self._partitions.add(month)
