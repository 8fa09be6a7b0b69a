"""billingproxy.metering.log_export on real-shaped exports (tests/data/) of the same five request lines.

* ``gcloud_logging_read.json``: ``gcloud logging read --format=json`` (a JSON array of LogEntry,
  newest first, keys sorted, 2-space indent; severity, labels and trace lifted out of the line;
  Cloud Run's request log and a text line from stderr in between).
* ``stdout_lines.jsonl``: the lines as the proxy wrote them, one spill-file line, a torn last line.
* ``bigquery_sink_rows.jsonl``: the BigQuery sink's rows (``bq extract`` newline JSON): payload and
  label names lowercased, TIMESTAMP columns as ``… UTC`` strings, Struct numbers as FLOAT64.
* ``gcloud_logging_read.yaml``: what ``gcloud logging read`` prints without ``--format=json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billingproxy.metering import log_export, request_log
from billingproxy.metering.log_export import UnreadableExport, read_entries, read_path, read_text
from testkit.billing import usage_records

DATA = Path(__file__).resolve().parent.parent / "data"
IDS = [f"chatcmpl-{i:02d}a7f3c9e1b2d44f0e9a8b7c6d5e4" for i in range(1, 6)]
COSTS = {
    IDS[0]: Decimal("0.0001698"),
    IDS[1]: Decimal("0.00370371"),
    IDS[2]: Decimal("0"),
    IDS[3]: Decimal("0"),
    IDS[4]: Decimal("0.0000123457"),
}


def by_id(result: log_export.ExportRead) -> dict:
    return {record.request_id: record for record in result.records}


def test_gcloud_logging_read_json_export() -> None:
    result = read_path(DATA / "gcloud_logging_read.json")
    assert result.format == "gcloud-json"
    assert result.counts() == {"read": 8, "records": 5, "unreadable": 0, "not_usage": 3, "invalid": 0}
    records = by_id(result)
    assert sorted(records) == IDS
    assert {rid: r.cost_usd for rid, r in records.items()} == COSTS  # exact, from doubles like 1.23457e-05
    first = records[IDS[0]]
    assert first.tenant_id == "tn_01JD8Z4K7Q" and first.customer_id == "cus_R2xK9mPq4LwT7a"
    assert first.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first.start_time == datetime(2026, 11, 30, 10, 15, 9, 124567, tzinfo=UTC)
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (812, 64, 876)
    streamed = records[IDS[1]]
    assert streamed.stream is True and streamed.cached_tokens == 512 and streamed.cache_hit is False
    assert [records[i].status for i in IDS] == ["success", "success", "failure", "rejected", "success"]
    assert records[IDS[3]].end_time is None and records[IDS[3]].api_key_id is None


def test_stdout_lines_and_spill_lines_with_a_torn_last_line() -> None:
    result = read_path(DATA / "stdout_lines.jsonl")
    assert result.format == "ndjson"
    assert result.counts() == {"read": 6, "records": 4, "unreadable": 1, "not_usage": 1, "invalid": 0}
    assert "stdout_lines.jsonl:6: not JSON" in result.errors[0]
    gcloud = by_id(read_path(DATA / "gcloud_logging_read.json"))
    for request_id, record in by_id(result).items():
        assert record == gcloud[request_id]  # the same rows, whichever way they were exported


def test_bigquery_sink_rows() -> None:
    result = read_path(DATA / "bigquery_sink_rows.jsonl")
    assert result.format == "bigquery"
    assert result.counts() == {"read": 7, "records": 5, "unreadable": 0, "not_usage": 2, "invalid": 0}
    assert by_id(result) == by_id(read_path(DATA / "gcloud_logging_read.json"))


def test_bq_query_json_array_with_every_value_a_string() -> None:
    rows = [json.loads(line) for line in (DATA / "bigquery_sink_rows.jsonl").read_text().splitlines()]

    def stringify(value):
        if isinstance(value, dict):
            return {k: stringify(v) for k, v in value.items()}
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if value is None else str(value)

    for row in rows:  # had the sink typed the payload's times as TIMESTAMP columns
        payload = row.get("jsonPayload") or {}
        for key in ("start_time", "end_time"):
            if payload.get(key):
                payload[key] = payload[key].replace("T", " ").replace("+00:00", " UTC")
    result = read_text(json.dumps([stringify(row) for row in rows]), source="bq-query.json")
    assert result.format == "bigquery" and result.invalid == 0, result.errors
    assert by_id(result) == by_id(read_path(DATA / "gcloud_logging_read.json"))


def test_unlifted_label_key_and_tenant_from_labels() -> None:
    line = json.loads(request_log.line(usage_records("tn_lbl", windows=1, per_window=1)[0]))
    line.pop("tenant_id")
    labels = line.pop("logging.googleapis.com/labels")
    row = {"jsonPayload": {**line, "logging_googleapis_com_labels": labels}, "timestamp": "2026-11-30 10:15:02 UTC"}
    (record,) = read_entries([row]).records
    assert record.tenant_id == "tn_lbl"


@pytest.mark.parametrize(
    "name,content",
    [
        ("gcloud_logging_read.yaml", None),  # gcloud's default (YAML) output
        ("garbage.txt", b"<html><body>502 Bad Gateway</body></html>\n"),
        ("binary.bin", bytes(range(256)) * 4),
        ("utf16.json", '[{"jsonPayload": {}}]'.encode("utf-16")),
        ("truncated.json", None),
    ],
)
def test_unreadable_input_is_an_error_not_zero_records(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = DATA / name
    if name == "truncated.json":
        path = tmp_path / name
        path.write_text((DATA / "gcloud_logging_read.json").read_text()[:3000])
    elif content is not None:
        path = tmp_path / name
        path.write_bytes(content)
    with pytest.raises(UnreadableExport, match=name):
        read_path(path)


def test_empty_and_other_services_logs_are_read_but_hold_no_records(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert read_path(empty).counts() == {"read": 0, "records": 0, "unreadable": 0, "not_usage": 0, "invalid": 0}
    none = tmp_path / "none.json"
    none.write_text("[]\n")
    assert read_path(none).counts()["read"] == 0
    other = tmp_path / "other.jsonl"
    other.write_text('{"severity": "INFO", "message": "hello"}\n{"textPayload": "x", "insertId": "1"}\n')
    assert read_path(other).counts() == {"read": 2, "records": 0, "unreadable": 0, "not_usage": 2, "invalid": 0}


def test_a_broken_request_line_is_counted_invalid_with_its_reason() -> None:
    line = json.loads(request_log.line(usage_records("tn_bad", windows=1, per_window=1)[0]))
    line["status"] = "exploded"
    result = read_entries([{"jsonPayload": line, "insertId": "1"}], source="x")
    assert result.counts()["invalid"] == 1 and "unknown usage status" in result.errors[0]


def test_round_trip_through_a_log_entry_keeps_every_field() -> None:
    records = usage_records("tn_rt", windows=3, per_window=3)
    entries = []
    for record in records:
        payload = json.loads(request_log.line(record, "proj"))
        labels = payload.pop("logging.googleapis.com/labels")
        severity = payload.pop("severity")
        entries.append({"jsonPayload": payload, "labels": labels, "severity": severity, "insertId": record.request_id})
    assert read_entries(entries).records == records


def test_filter_and_message_match_the_request_log() -> None:
    assert log_export.MESSAGE == request_log.MESSAGE
    since, until = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert log_export.cloud_logging_filter(since, until) == (
        'timestamp>="2026-11-30T00:00:00.000000Z" AND timestamp<"2026-12-01T00:00:00.000000Z" '
        'AND jsonPayload.message="litellm_request"'
    )
