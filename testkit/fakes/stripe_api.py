"""A fake Stripe API for the real ``stripe`` SDK (pointed at it with ``base_addresses``).

It implements what BillingProxy uses, with Stripe's documented semantics:

* ``POST /v1/billing/meter_events``: form-encoded like the SDK sends it; the ``Idempotency-Key``
  replays the first response for the same parameters; an ``identifier`` already accepted is
  refused (400); one concurrent call per customer (a second gets 429 and is counted as a
  violation, which the tests assert never happens).
* ``GET /v1/billing/meters``, ``GET /v1/billing/meters/{id}/event_summaries`` (hourly or whole
  range), ``POST /v1/billing/meter_event_adjustments`` (cancel by identifier),
  ``GET /v2/core/events/{id}`` (events the test stored).

Faults for meter events, consumed one per call from ``faults`` (or drawn with ``fault_rate``):
``"429"``, ``"500"``, ``"timeout"`` (never answers in time), ``"drop"`` (accepts the event,
then drops the connection without a response: the outcome is unknown to the client).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from testkit.fakes.aioserver import ThreadedAioServer

API_KEY = "sk_test_fake_billingproxy"


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][c]=v`` pairs into nested dicts (the encoding the SDK uses)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


def _error(status: int, message: str, code: str | None = None, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "code": code}}, status=status)


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    cancelled: bool = False


@dataclass
class FakeStripe(ThreadedAioServer):
    host: str = "127.0.0.1"
    port: int = 0
    latency_s: float = 0.0
    faults: deque[str] = field(default_factory=deque)
    fault_rate: dict[str, float] = field(default_factory=dict)
    seed: int = 7
    events: dict[str, MeterEvent] = field(default_factory=dict)
    v2_events: dict[str, dict] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    duplicate_identifiers: int = 0
    concurrency_violations: int = 0
    replays: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.host, self.port)
        self._meters: dict[str, str] = {}
        self._idempotency: dict[str, tuple[dict, int, dict]] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/billing/meter_events", self.create_meter_event)
        app.router.add_get("/v1/billing/meters", self.list_meters)
        app.router.add_get("/v1/billing/meters/{meter_id}/event_summaries", self.event_summaries)
        app.router.add_post("/v1/billing/meter_event_adjustments", self.adjust)
        app.router.add_get("/v2/core/events/{event_id}", self.v2_event)
        return app

    # ---- what the tests read -------------------------------------------------------------

    def totals(self, event_name: str | None = None) -> dict[str, int]:
        """Accepted, not cancelled values per customer."""
        sums: Counter[str] = Counter()
        with self._lock:
            for event in self.events.values():
                if not event.cancelled and event_name in (None, event.event_name):
                    sums[event.customer] += event.value
        return dict(sums)

    def idle(self) -> bool:
        """No meter-event call in flight (a killed client's last call may still be)."""
        with self._lock:
            return not self._in_flight

    def remove(self, identifier: str) -> MeterEvent:
        """Forget an accepted event, as if it had never arrived (to test reconciliation)."""
        with self._lock:
            return self.events.pop(identifier)

    # ---- handlers ------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    def _meter_id(self, event_name: str) -> str:
        return self._meters.setdefault(event_name, f"mtr_fake_{len(self._meters) + 1}")

    def _next_fault(self) -> str | None:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
            for fault, rate in self.fault_rate.items():
                if self._random.random() < rate:
                    return fault
        return None

    async def create_meter_event(self, request: web.Request) -> web.StreamResponse:
        self.calls["meter_events"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided", kind="invalid_request_error")
        params = parse_form(parse_qsl(await request.text()))
        customer = (params.get("payload") or {}).get("stripe_customer_id", "")
        with self._lock:
            if customer in self._in_flight:
                self.concurrency_violations += 1
                return _error(429, "Too many concurrent requests for this customer", "rate_limit", "rate_limit_error")
            self._in_flight.add(customer)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            fault = self._next_fault()
            if fault == "429":
                return _error(429, "Request rate limit exceeded", "rate_limit", "rate_limit_error")
            if fault == "500":
                return _error(500, "An unknown error occurred", kind="api_error")
            if fault == "timeout":
                with self._lock:
                    self._in_flight.discard(customer)  # Stripe gave up on it too: nothing was recorded
                await asyncio.sleep(60)
            response = self._create(params, request.headers.get("Idempotency-Key"))
            if fault == "drop":
                request.transport.close()  # processed, but the client never hears back
            return response
        finally:
            with self._lock:
                self._in_flight.discard(customer)

    def _create(self, params: dict, key: str | None) -> web.Response:
        with self._lock:
            if key in self._idempotency:
                first_params, status, body = self._idempotency[key]
                if first_params != params:
                    return _error(400, "Keys for idempotent requests can only be used with the same parameters")
                self.replays += 1
                return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        payload = params.get("payload") or {}
        try:
            identifier = params["identifier"]
            customer, value = payload["stripe_customer_id"], int(payload["value"])
            event = MeterEvent(identifier, params["event_name"], customer, value, int(params["timestamp"]))
        except (KeyError, ValueError):
            return _error(400, "event_name, identifier, timestamp, payload[stripe_customer_id], integer payload[value]")
        now = int(time.time())
        if not now - 35 * 86400 <= event.timestamp <= now + 300:
            return _error(400, "timestamp must be within the past 35 days and at most 5 minutes in the future")
        with self._lock:
            if identifier in self.events:
                self.duplicate_identifiers += 1
                return _error(400, f"An event with identifier {identifier} already exists", "duplicate_meter_event")
            self.events[identifier] = event
            self._meter_id(event.event_name)
            body = {
                "object": "billing.meter_event",
                "created": now,
                "event_name": event.event_name,
                "identifier": identifier,
                "livemode": False,
                "payload": payload,
                "timestamp": event.timestamp,
            }
            if key:
                self._idempotency[key] = (params, 200, body)
        return web.json_response(body)

    async def list_meters(self, request: web.Request) -> web.Response:
        self.calls["meters"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        data = [
            {"id": meter_id, "object": "billing.meter", "event_name": name, "status": "active"}
            for name, meter_id in self._meters.items()
        ]
        return web.json_response({"object": "list", "data": data, "has_more": False, "url": "/v1/billing/meters"})

    async def event_summaries(self, request: web.Request) -> web.Response:
        self.calls["event_summaries"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        meter_id = request.match_info["meter_id"]
        names = [name for name, mid in self._meters.items() if mid == meter_id]
        if not names:
            return _error(404, f"No such meter: '{meter_id}'", "resource_missing")
        query = request.query
        try:
            customer, start, end = query["customer"], int(query["start_time"]), int(query["end_time"])
        except (KeyError, ValueError):
            return _error(400, "customer, start_time and end_time are required")
        step = {"hour": 3600, "day": 86400}.get(query.get("value_grouping_window", ""), end - start)
        if (start % step or end % step) and step != end - start:
            return _error(400, "start_time and end_time must be aligned with value_grouping_window")
        sums: Counter[int] = Counter()
        with self._lock:
            for event in self.events.values():
                mine = event.event_name == names[0] and event.customer == customer and not event.cancelled
                if mine and start <= event.timestamp < end:
                    sums[start + (event.timestamp - start) // step * step] += event.value
        data = [
            {
                "id": f"mtrusg_{meter_id}_{bucket}",
                "object": "billing.meter_event_summary",
                "aggregated_value": float(value),
                "start_time": bucket,
                "end_time": bucket + step,
                "livemode": False,
                "meter": meter_id,
            }
            for bucket, value in sorted(sums.items(), reverse=True)
        ]
        return web.json_response({"object": "list", "data": data, "has_more": False, "url": request.path})

    async def adjust(self, request: web.Request) -> web.Response:
        self.calls["meter_event_adjustments"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        params = parse_form(parse_qsl(await request.text()))
        identifier = (params.get("cancel") or {}).get("identifier")
        with self._lock:
            event = self.events.get(identifier or "")
            if params.get("type") != "cancel" or event is None or event.event_name != params.get("event_name"):
                return _error(400, f"No meter event with identifier {identifier!r} to cancel")
            event.cancelled = True
        body = {
            "object": "billing.meter_event_adjustment",
            "event_name": event.event_name,
            "status": "pending",
            "type": "cancel",
            "cancel": {"identifier": identifier},
            "livemode": False,
        }
        return web.json_response(body)

    async def v2_event(self, request: web.Request) -> web.Response:
        self.calls["v2_events"] += 1
        event = self.v2_events.get(request.match_info["event_id"])
        if event is None:
            return _error(404, "no such event", "resource_missing")
        return web.json_response(event)
