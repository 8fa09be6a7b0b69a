"""Usage writer throughput: our writer (idempotent insert + daily rollup, batched) against a raw
COPY of the same rows into the same table, in the same run, alternating, on fresh tables.

    python -m bench.writer_bench --rows 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from bench.compare import database
from billingproxy.config import WriterSettings
from billingproxy.metering import UsageRecord, UsageWriter
from billingproxy.metering.store import COPY_TYPES, DIRECT_COPY, row_values


def records(count: int) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return [
        UsageRecord.from_json(
            dict(
                request_id=str(uuid.uuid4()),
                tenant_id=f"tn_{i % 50}",
                api_key_id=f"key_{i % 200}",
                model=("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")[i % 3],
                model_group=None,
                provider="openai",
                call_type="acompletion",
                prompt_tokens=100 + i % 900,
                completion_tokens=50 + i % 400,
                cached_tokens=i % 50,
                reasoning_tokens=0,
                total_tokens=150 + i % 1300,
                cost_usd=Decimal("0.0001234567") * (1 + i % 7),
                latency_ms=200 + i % 800,
                status="success",
                http_status=200,
                error_type=None,
                stream=bool(i % 2),
                cache_hit=False,
                customer_id=f"cus_{i % 50}",
                trace_id=None,
                start_time=now - timedelta(milliseconds=i),
                end_time=now,
            )
        )
        for i in range(count)
    ]


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE litellm_usage, usage_daily")


def raw_copy(url: str, rows: list[UsageRecord]) -> float:
    """The ceiling: one COPY of every row straight into the table, no idempotency, no rollup."""
    statement = DIRECT_COPY
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(statement) as copy:
            copy.set_types(COPY_TYPES)  # the same binary format the writer uses
            for values in map(row_values, rows):
                copy.write_row(values)
        conn.commit()
    return len(rows) / (time.perf_counter() - started)


def through_writer(url: str, rows: list[UsageRecord], batch: int, max_batch: int) -> float:
    settings = WriterSettings(
        batch_size=batch,
        max_batch=max_batch,
        flush_interval_s=0.2,
        queue_bound=len(rows) + 1,
        spill_dir=Path(tempfile.mkdtemp()),
    )
    writer = UsageWriter(url, settings)
    started = time.perf_counter()
    writer.start()
    for record in rows:
        writer.submit(record)
    writer.close()  # returns once every row is written (the writer thread drains the queue first)
    elapsed = time.perf_counter() - started
    assert writer.written == len(rows), (writer.written, len(rows))
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="the writer's batch trigger (default setting)")
    parser.add_argument("--max-batch", type=int, default=20_000, help="the writer catch-up batch (default)")
    args = parser.parse_args()
    url, embedded = database()
    try:
        copy_rates, writer_rates = [], []
        for round_no in range(args.rounds):
            rows = records(args.rows)
            order = ("copy", "writer") if round_no % 2 == 0 else ("writer", "copy")
            for kind in order:
                reset(url)
                if kind == "copy":
                    copy_rates.append(raw_copy(url, rows))
                else:
                    writer_rates.append(through_writer(url, rows, args.batch, args.max_batch))
            print(
                f"round {round_no + 1}: raw COPY {copy_rates[-1]:9.0f} rows/s   writer {writer_rates[-1]:9.0f} rows/s"
            )
        copy_rate, writer_rate = statistics.median(copy_rates), statistics.median(writer_rates)
        print(f"\nraw COPY (median)  {copy_rate:9.0f} rows/s")
        print(
            f"writer (median)    {writer_rate:9.0f} rows/s   batches of {args.batch}..{args.max_batch}, "
            "idempotent, with the daily rollup in the same transaction"
        )
        print(f"ratio writer/COPY  {writer_rate / copy_rate:9.3f}")
    finally:
        if embedded is not None:
            embedded.destroy()


if __name__ == "__main__":
    main()
