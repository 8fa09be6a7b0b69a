"""`usage replay`, the recovery path for lost rows: real-shaped exports (tests/data/) and the Cloud
Logging API (the real google-cloud-logging client against a local fake of entries:list) restore
exactly the missing rows; unreadable input exits non-zero with counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from billingproxy.cli import main as cli
from billingproxy.metering import UsageStore, read_path, request_log
from testkit.billing import usage_records
from testkit.fakes.cloud_logging import FakeCloudLogging, entry_for_line

DATA = Path(__file__).resolve().parent.parent / "data"
PROJECT = "acme-llm-prod"


def stored(database_url: str) -> dict[str, object]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT request_id, cost_usd FROM litellm_usage").fetchall()
    return dict(rows)


def replay(database_url: str, *args: str, **env: str):
    return CliRunner().invoke(cli, ["usage", "replay", *args], env={"DATABASE_URL": database_url, **env})


@pytest.mark.parametrize("export", ["gcloud_logging_read.json", "bigquery_sink_rows.jsonl"])
def test_replay_of_a_real_shaped_export_restores_exactly_the_missing_rows(billing_db: str, export: str) -> None:
    records = read_path(DATA / export).records
    assert len(records) == 5
    with psycopg.connect(billing_db) as conn:
        UsageStore().write(conn, records[:3])  # two rows were lost
    result = replay(billing_db, str(DATA / export), "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert (counts["records"], counts["inserted"], counts["skipped"], counts["unreadable"]) == (5, 2, 3, 0)
    assert stored(billing_db) == {r.request_id: r.cost_usd for r in records}  # costs exact
    again = json.loads(replay(billing_db, str(DATA / export), "--json").output)
    assert (again["inserted"], again["skipped"]) == (0, 5)  # idempotent


def test_garbage_exits_non_zero_with_counts_and_the_good_file_is_still_stored(billing_db: str, tmp_path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"this is not an export\n\x89PNG nor this\n")
    result = replay(billing_db, str(DATA / "gcloud_logging_read.json"), str(garbage))
    assert result.exit_code == 1
    assert "usage records, inserted 5" in result.output and "unreadable 1" in result.output
    assert "Error: 1 unreadable or invalid inputs" in result.output
    assert len(stored(billing_db)) == 5


def test_a_json_file_without_any_request_line_is_an_error(billing_db: str, tmp_path) -> None:
    other = tmp_path / "other-logs.json"
    other.write_text(json.dumps([{"insertId": "1", "textPayload": "GET /health 200", "severity": "INFO"}]))
    result = replay(billing_db, str(other))
    assert result.exit_code == 1 and "no usage record in the input" in result.output


@pytest.fixture
def logging_api() -> Iterator[FakeCloudLogging]:
    server = FakeCloudLogging().start()
    yield server
    server.stop()


def test_replay_from_the_cloud_logging_api_restores_exactly_the_missing_rows(
    billing_db: str, logging_api: FakeCloudLogging
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    records = usage_records("tn_cloudlog", windows=150, per_window=1, start=t0)
    for i, record in enumerate(records):
        line = request_log.line(record, PROJECT)
        logging_api.add(entry_for_line(line, project=PROJECT, timestamp=t0 + timedelta(seconds=i)))
    outside = usage_records("tn_cloudlog", windows=3, per_window=1, start=t0 + timedelta(hours=1))
    for record in outside:  # after --until: not read
        logging_api.add(entry_for_line(request_log.line(record), project=PROJECT, timestamp=t0 + timedelta(hours=1)))
    with psycopg.connect(billing_db) as conn:
        UsageStore().write(conn, records[::2])  # every other row was lost
    result = replay(
        billing_db,
        "--from-cloud-logging",
        "--since",
        f"{t0:%Y-%m-%dT%H:%M:%S}",
        "--until",
        f"{t0 + timedelta(minutes=30):%Y-%m-%dT%H:%M:%S}",
        "--json",
        GOOGLE_CLOUD_PROJECT=PROJECT,
        BILLINGPROXY_CLOUD_LOGGING_ENDPOINT=logging_api.base_url,
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert (counts["read"], counts["inserted"], counts["skipped"], counts["format"]) == (150, 75, 75, "cloud-logging")
    assert stored(billing_db) == {r.request_id: r.cost_usd for r in records}
    assert logging_api.calls["entries:list"] >= 1


def test_cloud_logging_replay_needs_a_time_range(billing_db: str) -> None:
    result = replay(billing_db, "--from-cloud-logging", "--since", "2026-11-30")
    assert result.exit_code == 2 and "--since and --until" in result.output
