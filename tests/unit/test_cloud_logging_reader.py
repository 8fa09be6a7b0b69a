"""The real google-cloud-logging client (REST) against the fake Logging API, read by log_export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as google_exceptions

from billingproxy.metering import log_export, request_log
from testkit.billing import usage_records
from testkit.fakes.cloud_logging import FakeCloudLogging, entry_for_line

PROJECT = "acme-llm-prod"
T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeCloudLogging]:
    server = FakeCloudLogging().start()
    yield server
    server.stop()


def populate(fake: FakeCloudLogging) -> list:
    """250 request lines over 250 s, plus other logs, another project's lines and later lines."""
    records = usage_records("tn_logs", windows=250, per_window=1, start=T0)
    for i, record in enumerate(records):
        fake.add(
            entry_for_line(request_log.line(record, PROJECT), project=PROJECT, timestamp=T0 + timedelta(seconds=i))
        )
    operational = {"severity": "WARNING", "logger": "billingproxy.budget", "message": "budget threshold crossed"}
    fake.add(entry_for_line(json.dumps(operational), project=PROJECT, timestamp=T0 + timedelta(seconds=5)))
    elsewhere = usage_records("tn_other", windows=3, per_window=1, start=T0)
    for record in elsewhere:
        fake.add(entry_for_line(request_log.line(record), project="someone-else", timestamp=T0))
    later = usage_records("tn_logs", windows=4, per_window=1, start=T0 + timedelta(hours=2))
    for record in later:
        fake.add(entry_for_line(request_log.line(record), project=PROJECT, timestamp=T0 + timedelta(hours=2)))
    return records


def test_reader_pages_through_entries_list_and_restores_every_record(fake: FakeCloudLogging) -> None:
    records = populate(fake)
    client = fake.client(PROJECT)
    result = log_export.read_cloud_logging(client, PROJECT, T0, T0 + timedelta(hours=1), page_size=100)
    assert result.format == "cloud-logging"
    assert result.counts() == {"read": 250, "records": 250, "unreadable": 0, "not_usage": 0, "invalid": 0}
    assert result.records == records  # oldest first, every field intact (costs exact)
    assert fake.calls["entries:list"] == 3  # 100 + 100 + 50, following nextPageToken
    first, second, _ = fake.requests
    assert first["resourceNames"] == [f"projects/{PROJECT}"] and "pageToken" not in first
    assert second["pageToken"] and second["filter"] == first["filter"] == log_export.cloud_logging_filter(
        T0, T0 + timedelta(hours=1)
    )


def test_without_the_message_filter_other_lines_are_counted_not_usage(fake: FakeCloudLogging) -> None:
    populate(fake)
    client = fake.client(PROJECT)
    entries = client.list_entries(
        resource_names=[f"projects/{PROJECT}"],
        filter_=f'timestamp>="{T0.isoformat()}" AND timestamp<"{(T0 + timedelta(seconds=10)).isoformat()}"',
        page_size=4,
    )
    result = log_export.read_entries(entries)
    assert result.counts() == {"read": 11, "records": 10, "unreadable": 0, "not_usage": 1, "invalid": 0}


def test_an_unsupported_filter_is_a_400_not_everything(fake: FakeCloudLogging) -> None:
    populate(fake)
    client = fake.client(PROJECT)
    with pytest.raises(google_exceptions.BadRequest):
        list(client.list_entries(resource_names=[f"projects/{PROJECT}"], filter_='severity="ERROR" OR severity="INFO"'))
