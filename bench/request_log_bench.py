"""What the product docs' fields (usage, cost, latency) add to the request log line.

python -m bench.request_log_bench [--lines 20000 --rounds 7]

Builds the line for a typical success record with ``request_log.line`` (today's line) and with the
line as it was before those fields (same code, without them), alternating rounds in one process,
and prints the bytes per line and the median µs per line of each, and the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal

from billingproxy.metering import UsageRecord, request_log

ADDED = ("usage", "cost", "latency")


def sample_record() -> UsageRecord:
    return UsageRecord.from_json(dict(
        request_id="chatcmpl-" + "a1b2c3d4" * 4, tenant_id="tn_" + "x" * 22, api_key_id="key_" + "y" * 22,
        model="gpt-4o", model_group="gpt-4o", provider="openai", call_type="acompletion", prompt_tokens=1234,
        completion_tokens=567, cached_tokens=128, reasoning_tokens=0, total_tokens=1801,
        cost_usd=Decimal("0.0087490000"), latency_ms=2412, status="success", http_status=200, error_type=None,
        stream=False, cache_hit=False, customer_id="cus_" + "z" * 14, trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        start_time=datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC),
        end_time=datetime(2026, 12, 1, 9, 0, 2, 535456, tzinfo=UTC),
    ))  # fmt: skip


def line_before(record: UsageRecord, project: str | None) -> str:
    """The line without the product docs' fields: request_log.line as it was before them."""
    data = record.to_json()
    data["cost_usd"] = float(record.cost_usd)
    data["logging.googleapis.com/labels"] = {"tenant_id": record.tenant_id, "model": record.model}
    if record.trace_id and project:
        data["logging.googleapis.com/trace"] = f"projects/{project}/traces/{record.trace_id}"
    head = {"severity": "INFO", "logger": request_log.log.name, "message": request_log.MESSAGE}
    return json.dumps({**head, **data}, separators=(", ", ": "))


def per_line_us(build, record: UsageRecord, lines: int) -> float:
    start = time.perf_counter()
    for _ in range(lines):
        build(record, "my-project")
    return (time.perf_counter() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    record = sample_record()
    now, before = request_log.line(record, "my-project"), line_before(record, "my-project")
    parsed = json.loads(now)
    assert {k: v for k, v in parsed.items() if k not in ADDED} == json.loads(before), "the baseline drifted"
    added = ", ".join(json.dumps({k: parsed[k]})[1:-1] for k in ADDED)
    times: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(args.rounds):
        times["before"].append(per_line_us(line_before, record, args.lines))
        times["now"].append(per_line_us(request_log.line, record, args.lines))
    b, n = statistics.median(times["before"]), statistics.median(times["now"])
    print(f"added to each line: {added}")
    print(f"bytes per line: {len(before.encode())} before, {len(now.encode())} now (+{len(now) - len(before)})")
    print(f"µs per line (median of {args.rounds} rounds of {args.lines:,}): {b:.2f} before, {n:.2f} now (+{n - b:.2f})")


if __name__ == "__main__":
    main()
