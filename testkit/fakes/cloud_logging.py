"""A fake Cloud Logging v2 API: ``POST /v2/entries:list`` as the google-cloud-logging client calls it.

The real client (google-cloud-logging 3.17) uses gRPC when grpcio is installed; forced onto the
JSON REST API with ``_use_grpc=False`` and pointed here with
``client_options={"api_endpoint": fake.base_url}`` and anonymous credentials (``client()`` below),
it POSTs ``{resourceNames, filter, orderBy, pageSize, pageToken}`` to ``/v2/entries:list``
(google/cloud/logging_v2/_http.py ``_LoggingAPI.list_entries``) and pages on ``nextPageToken``.

Modelled on https://cloud.google.com/logging/docs/reference/v2/rest/v2/entries/list:
``resourceNames`` required (``projects/P``; entries of other projects are not returned),
``orderBy`` ``timestamp asc`` (default) or ``timestamp desc``, ``pageSize`` at most 1000 (default 50),
``nextPageToken`` absent on the last page, an opaque token only valid with the same filter.
Filters (https://cloud.google.com/logging/docs/view/logging-query-language): comparisons joined by
``AND`` — ``timestamp>=/>/</<= "RFC 3339"``, ``field.path="value"`` / ``!=`` / ``:`` (has);
anything else (``OR``, ``NOT``, regexes) is answered 400 so a test never passes on an ignored filter.

``entry_for_line`` wraps one of our stdout lines the way Cloud Run's logging agent does: the line
becomes ``jsonPayload`` with ``severity``, ``logging.googleapis.com/labels`` and
``logging.googleapis.com/trace`` lifted out into ``severity``, ``labels`` and ``trace``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from testkit.fakes.aioserver import ThreadedAioServer

MAX_PAGE = 1000
DEFAULT_PAGE = 50
_CLAUSE = re.compile(r'^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|:)\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')


def _parse_time(value: str) -> datetime:
    value = value.strip()
    match = re.match(r"^(.*?)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        raise ValueError(f"bad timestamp {value!r}")
    base, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]  # nanoseconds → microseconds
    parsed = datetime.fromisoformat(base + fraction + ("+00:00" if zone == "Z" else zone))
    return parsed.astimezone(UTC)


def _lookup(entry: dict, path: str) -> Any:
    node: Any = entry
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``a>=b AND c="d"`` into [(field, op, value)]; raises ValueError on what we do not model."""
    clauses = []
    for raw in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        clause = raw.strip()
        while clause.startswith("(") and clause.endswith(")"):
            clause = clause[1:-1].strip()
        if re.search(r"\s(OR|NOT)\s|^NOT\s|^-", clause):
            raise ValueError(f"unsupported filter clause {clause!r}")
        match = _CLAUSE.match(clause)
        if not match:
            raise ValueError(f"unsupported filter clause {clause!r}")
        name, op, quoted, bare = match.groups()
        clauses.append((name, op, quoted if quoted is not None else bare))
    return clauses


def _matches(entry: dict, clauses: list[tuple[str, str, str]]) -> bool:
    for name, op, value in clauses:
        actual = _lookup(entry, name)
        if op == ":":
            if actual is None or value not in str(actual):
                return False
            continue
        if name in ("timestamp", "receiveTimestamp"):
            if actual is None:
                return False
            left, right = _parse_time(actual), _parse_time(value)
        else:
            left, right = ("" if actual is None else str(actual)), value
        ok = {
            "=": left == right,
            "!=": left != right,
            ">=": left >= right,
            "<=": left <= right,
            ">": left > right,
            "<": left < right,
        }[op]
        if not ok:
            return False
    return True


def _project(entry: dict) -> str | None:
    parts = str(entry.get("logName", "")).split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "projects" else None


def _google_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": code}}, status=status)


def entry_for_line(
    line: str | dict,
    *,
    project: str = "fake-project",
    timestamp: datetime | None = None,
    insert_id: str | None = None,
    service: str = "billingproxy",
    log: str = "run.googleapis.com%2Fstdout",
) -> dict:
    """One stdout line as the Cloud Run revision's LogEntry (the shape entries:list returns)."""
    payload = json.loads(line) if isinstance(line, str) else dict(line)
    stamp = (timestamp or datetime.now(UTC)).astimezone(UTC)
    entry: dict[str, Any] = {
        "insertId": insert_id or hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24],
        "jsonPayload": payload,
        "labels": {"instanceId": "00fake" + hashlib.sha256(project.encode()).hexdigest()},
        "logName": f"projects/{project}/logs/{log}",
        "receiveTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "resource": {
            "type": "cloud_run_revision",
            "labels": {
                "configuration_name": service,
                "location": "europe-west1",
                "project_id": project,
                "revision_name": f"{service}-00001-abc",
                "service_name": service,
            },
        },
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if "severity" in payload:
        entry["severity"] = payload.pop("severity")
    entry["labels"].update(payload.pop("logging.googleapis.com/labels", None) or {})
    if "logging.googleapis.com/trace" in payload:
        entry["trace"] = payload.pop("logging.googleapis.com/trace")
    return entry


@dataclass
class FakeCloudLogging(ThreadedAioServer):
    host: str = "127.0.0.1"
    port: int = 0
    entries: list[dict] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[dict] = field(default_factory=list)  # every entries:list body, for assertions

    def __post_init__(self) -> None:
        super().__init__(self.host, self.port)
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/entries:list", self.list_entries)
        return app

    def add(self, *entries: dict) -> None:
        with self._lock:
            self.entries.extend(entries)

    def client(self, project: str = "fake-project"):
        """The real google-cloud-logging client, on REST, aimed at this fake."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import logging as cloud_logging

        return cloud_logging.Client(
            project=project,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options={"api_endpoint": self.base_url},
        )

    @staticmethod
    def _token(offset: int, filter_text: str, order: str) -> str:
        digest = hashlib.sha256(f"{filter_text}\x00{order}".encode()).hexdigest()[:16]
        return base64.urlsafe_b64encode(f"{offset}:{digest}".encode()).decode()

    async def list_entries(self, request: web.Request) -> web.Response:
        self.calls["entries:list"] += 1
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        self.requests.append(body)
        names = body.get("resourceNames") or []
        if not names:
            return _google_error(400, "resourceNames must be specified", "INVALID_ARGUMENT")
        projects = {n.split("/", 1)[1] for n in names if n.startswith("projects/")}
        filter_text = body.get("filter") or ""
        order = (body.get("orderBy") or "timestamp asc").strip().lower()
        if order not in ("timestamp asc", "timestamp desc"):
            return _google_error(400, f"Invalid orderBy: {order}", "INVALID_ARGUMENT")
        try:
            clauses = parse_filter(filter_text)
        except ValueError as exc:
            return _google_error(400, f"Invalid filter: {exc}", "INVALID_ARGUMENT")
        size = int(body.get("pageSize") or DEFAULT_PAGE)
        if not 0 < size <= MAX_PAGE:
            return _google_error(400, f"pageSize must be in [1, {MAX_PAGE}]", "INVALID_ARGUMENT")
        offset = 0
        if body.get("pageToken"):
            try:
                raw_offset, _digest = base64.urlsafe_b64decode(body["pageToken"]).decode().split(":")
                offset = int(raw_offset)
            except (ValueError, UnicodeDecodeError):
                return _google_error(400, "Invalid page token", "INVALID_ARGUMENT")
            if self._token(offset, filter_text, order) != body["pageToken"]:
                return _google_error(400, "The page token does not match the request", "INVALID_ARGUMENT")
        with self._lock:
            mine = [e for e in self.entries if _project(e) in projects]
        try:
            selected = [e for e in mine if _matches(e, clauses)]
        except ValueError as exc:
            return _google_error(400, f"Invalid filter: {exc}", "INVALID_ARGUMENT")
        selected.sort(key=lambda e: _parse_time(e["timestamp"]), reverse=order.endswith("desc"))
        page = selected[offset : offset + size]
        response: dict[str, Any] = {"entries": page} if page else {}
        if offset + size < len(selected):
            response["nextPageToken"] = self._token(offset + size, filter_text, order)
        return web.json_response(response)
