"""Usage records from exported logs: the recovery path for rows that never reached PostgreSQL.

Four shapes carry our request line (``billingproxy.request_log.line``):

* **Newline-delimited JSON**: our stdout lines as written, and spill files (``UsageRecord.to_json``).
* **``gcloud logging read --format=json``**: one JSON array of LogEntry objects. Cloud Logging
  keeps our line under ``jsonPayload`` but lifts the special fields out of it: ``severity`` →
  ``severity``, ``logging.googleapis.com/labels`` → ``labels``, ``logging.googleapis.com/trace``
  → ``trace``. Struct numbers are doubles (``1.23457e-05``, ``10.0``).
* **BigQuery sink rows** (``bq extract`` newline JSON, or a ``bq query --format=json`` array): the
  LogEntry with ``jsonPayload`` as nested columns. Per the sink's schema rules, payload field names
  are lowercased and characters other than letters, digits and ``_`` become ``_`` (so an un-lifted
  ``logging.googleapis.com/labels`` is ``logging_googleapis_com_labels``); ``timestamp`` is a
  TIMESTAMP printed as ``2026-11-30 10:15:02.123456 UTC``; ``bq query`` prints every value as a
  string (``"true"``, ``"10"``).
* **Cloud Logging API** (``entries:list``): LogEntry dicts, or ``google-cloud-logging`` entry
  objects (anything with ``to_api_repr()``), from an iterable.

Everything returns an :class:`ExportRead`: the records plus counts (``read``, ``unreadable``,
``not_usage``, ``invalid``). A file with content but not one JSON value in it (garbage, a binary or
a non-JSON file) raises :class:`UnreadableExport` instead of yielding nothing. Pure parsing: no
litellm, no environment, no network (``read_cloud_logging`` drives a client it is given).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from billingproxy.errors import InvalidInput
from billingproxy.metering.record import UsageRecord

__all__ = [
    "MESSAGE",
    "ExportRead",
    "UnreadableExport",
    "cloud_logging_filter",
    "iter_cloud_logging",
    "read_cloud_logging",
    "read_entries",
    "read_ndjson",
    "read_path",
    "read_paths",
    "read_text",
    "record_from_line",
]

MESSAGE = "litellm_request"  # billingproxy.metering.request_log.MESSAGE (a test checks they agree)
MAX_ERRORS = 20
_INT_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "latency_ms",
    "http_status",
)
_BOOL_FIELDS = ("stream", "cache_hit", "usage_estimated")
_COST_SCALE = Decimal("1e-10")  # litellm_usage.cost_usd is NUMERIC(20,10)
_LOGENTRY_KEYS = {"jsonPayload", "textPayload", "protoPayload", "insertId", "logName"}
_BQ_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?: ?UTC| ?Z|[+-]00:?00)?$")


class UnreadableExport(InvalidInput):
    """The input is not any export format we read (and not an empty file)."""


@dataclass
class ExportRead:
    records: list[UsageRecord] = field(default_factory=list)
    format: str = "empty"
    read: int = 0  # lines, entries or rows looked at
    unreadable: int = 0  # not JSON (a torn last line, garbage)
    not_usage: int = 0  # JSON, but not one of our request lines (other log lines, other services)
    invalid: int = 0  # looked like a request line but could not be made into a record
    errors: list[str] = field(default_factory=list)  # the first few reasons, for the operator

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "records": len(self.records),
            "unreadable": self.unreadable,
            "not_usage": self.not_usage,
            "invalid": self.invalid,
        }

    def merge(self, other: ExportRead) -> ExportRead:
        self.records.extend(other.records)
        self.format = other.format if self.format in ("empty", other.format) else "mixed"
        self.read += other.read
        self.unreadable += other.unreadable
        self.not_usage += other.not_usage
        self.invalid += other.invalid
        self.errors.extend(other.errors[: max(0, MAX_ERRORS - len(self.errors))])
        return self

    def _note(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


# ---- one item ---------------------------------------------------------------------------


def _bq_name(key: str) -> str:
    """The BigQuery sink's field-name rule, to match names either way."""
    return re.sub(r"[^0-9a-z_]", "_", key.lower()).lstrip("_")


def _normalize_keys(payload: dict[str, Any]) -> dict[str, Any]:
    return {_bq_name(k): v for k, v in payload.items()}


def _time(value: Any) -> Any:
    """ISO-8601 from any of the timestamp spellings above (BigQuery's ``… UTC`` included)."""
    if not isinstance(value, str):
        return value
    match = _BQ_TIME.match(value.strip())
    if match:
        return f"{match.group(1)}T{match.group(2)}+00:00"
    return value


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ValueError(f"not a whole number: {value!r}")
    return int(number)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def record_from_line(data: dict[str, Any], labels: dict[str, Any] | None = None) -> UsageRecord:
    """A usage record from one request line (any of the shapes above, after unwrapping)."""
    data = _normalize_keys(data)
    labels = _normalize_keys(labels or data.get("logging_googleapis_com_labels") or {})
    for key in ("tenant_id", "model"):  # lifted into labels by Cloud Logging as well
        if not data.get(key) and labels.get(key):
            data[key] = labels[key]
    for key in _INT_FIELDS:
        data[key] = _int(data.get(key))
    for key in _BOOL_FIELDS:
        data[key] = _bool(data.get(key))
    for key in ("start_time", "end_time"):
        data[key] = _time(data.get(key))
    try:
        cost = Decimal(str(data.get("cost_usd") if data.get("cost_usd") is not None else "0"))
    except InvalidOperation as exc:
        raise ValueError(f"cost_usd is not a number: {data.get('cost_usd')!r}") from exc
    # A double round-trip (Struct, FLOAT64) may add digits past NUMERIC(20,10)'s scale.
    data["cost_usd"] = cost.quantize(_COST_SCALE)
    return UsageRecord.from_json(data)


def _is_usage_line(data: dict[str, Any]) -> bool:
    data = _normalize_keys(data)
    if data.get("message") not in (None, MESSAGE):
        return False
    return bool(data.get("request_id")) and ("tenant_id" in data or "model" in data)


def _unwrap(item: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(our line, the entry's labels) from a LogEntry/BigQuery row, or the line itself."""
    if _LOGENTRY_KEYS & item.keys() or {"jsonpayload", "textpayload"} & item.keys():
        payload = item.get("jsonPayload", item.get("jsonpayload"))
        labels = item.get("labels")
        return (payload if isinstance(payload, dict) else None), (labels if isinstance(labels, dict) else None)
    return item, None


def _take(result: ExportRead, item: Any, where: str) -> None:
    result.read += 1
    if hasattr(item, "to_api_repr"):  # a google-cloud-logging entry object
        item = item.to_api_repr()
    if not isinstance(item, dict):
        result.not_usage += 1
        return
    line, labels = _unwrap(item)
    if line is None or not _is_usage_line(line):
        result.not_usage += 1
        return
    try:
        result.records.append(record_from_line(line, labels))
    except (ValueError, TypeError, InvalidOperation) as exc:
        result.invalid += 1
        result._note(f"{where}: {exc}")


# ---- whole inputs -----------------------------------------------------------------------


def read_ndjson(lines: Iterable[str], *, source: str = "<lines>") -> ExportRead:
    """Newline-delimited JSON: our lines, spill files, LogEntry-per-line or BigQuery rows."""
    result = ExportRead(format="ndjson")
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text:
            continue
        try:
            item = json.loads(text, parse_float=Decimal)  # money stays exact
        except json.JSONDecodeError:
            result.read += 1
            result.unreadable += 1
            result._note(f"{source}:{number}: not JSON")
            continue
        if isinstance(item, dict) and ({"jsonPayload", "jsonpayload"} & item.keys()):
            result.format = "bigquery" if _is_bigquery_row(item) else "logentry-ndjson"
        _take(result, item, f"{source}:{number}")
    return result


def _is_bigquery_row(item: dict[str, Any]) -> bool:
    stamp = item.get("timestamp")
    return (isinstance(stamp, str) and stamp.endswith("UTC")) or "jsonpayload" in item


def read_entries(entries: Iterable[Any], *, source: str = "<entries>", fmt: str = "logentry") -> ExportRead:
    """LogEntry dicts (``entries:list``, ``gcloud logging read --format=json``, BigQuery rows) or
    google-cloud-logging entry objects."""
    result = ExportRead(format=fmt)
    for number, entry in enumerate(entries):
        _take(result, entry, f"{source}[{number}]")
    return result


read_log_entries = read_entries  # the name the Cloud Logging reader uses


def read_text(text: str, *, source: str = "<text>") -> ExportRead:
    """Any of the formats, told apart by their first character and shape."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        return ExportRead(format="empty")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise UnreadableExport(
                f"{source}: a JSON array that does not parse ({exc.msg} at line {exc.lineno})"
            ) from exc
        if not isinstance(items, list):
            raise UnreadableExport(f"{source}: not a JSON array of log entries")
        fmt = "bigquery" if any(isinstance(i, dict) and _is_bigquery_row(i) for i in items) else "gcloud-json"
        return read_entries(items, source=source, fmt=fmt)
    result = read_ndjson(stripped.splitlines(), source=source)
    if result.unreadable == result.read and result.read:
        try:  # one pretty-printed object (a single LogEntry saved from the console)
            item = json.loads(stripped, parse_float=Decimal)
        except json.JSONDecodeError:
            raise UnreadableExport(
                f"{source}: not JSON, a JSON array or newline-delimited JSON ({result.read} lines, none readable)"
            ) from None
        return read_entries([item], source=source, fmt="logentry")
    return result


def read_path(path: str | Path) -> ExportRead:
    """One file of any of the formats. Raises UnreadableExport for garbage or non-UTF-8 input."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableExport(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if "\x00" in text:
        raise UnreadableExport(f"{path}: a binary file")
    return read_text(text, source=str(path))


def read_paths(paths: Iterable[str | Path]) -> ExportRead:
    result = ExportRead()
    for path in paths:
        result.merge(read_path(path))
    return result


# ---- Cloud Logging API ------------------------------------------------------------------


def _rfc3339(ts: datetime) -> str:
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cloud_logging_filter(since: datetime, until: datetime, *, extra: str | None = None) -> str:
    """The ``entries:list`` filter for our request lines written in [since, until)."""
    clauses = [
        f'timestamp>="{_rfc3339(since)}"',
        f'timestamp<"{_rfc3339(until)}"',
        f'jsonPayload.message="{MESSAGE}"',
    ]
    if extra:
        clauses.append(f"({extra})")
    return " AND ".join(clauses)


def iter_cloud_logging(
    client: Any, project: str, since: datetime, until: datetime, *, page_size: int = 1000
) -> Iterator[Any]:
    """Entries from a ``google.cloud.logging.Client`` (REST or gRPC), oldest first, all pages."""
    return client.list_entries(
        resource_names=[f"projects/{project}"],
        filter_=cloud_logging_filter(since, until),
        order_by="timestamp asc",
        page_size=page_size,
    )


def read_cloud_logging(
    client: Any, project: str, since: datetime, until: datetime, *, page_size: int = 1000
) -> ExportRead:
    return read_entries(
        iter_cloud_logging(client, project, since, until, page_size=page_size),
        source=f"projects/{project}",
        fmt="cloud-logging",
    )
