"""A fake Stripe API for the real ``stripe`` SDK (pointed at it with ``base_addresses``).

It models the Stripe behaviours BillingProxy depends on, each switchable per test, each with the
doc page or SDK line it comes from (``docs.stripe.com/...`` below; the SDK is stripe-python 16.1,
``.venv/lib/python3.11/site-packages/stripe``). The defaults are faithful where the existing
suite allows it; where a default is kinder than Stripe, the switch that makes it faithful is named.

Endpoints
---------
* ``POST /v1/billing/meter_events``: form-encoded like the SDK sends it.
* ``GET /v1/billing/meters`` (paged, ``status`` filter), ``GET/POST /v1/billing/meters/{id}``,
  ``POST /v1/billing/meters``, ``POST /v1/billing/meters/{id}/deactivate|reactivate``.
* ``GET /v1/billing/meters/{id}/event_summaries`` (hourly, daily or whole range; paged).
* ``POST /v1/billing/meter_event_adjustments`` (cancel by identifier).
* ``GET /v1/customers/{id}``, ``GET /v1/subscriptions`` (``customer``, ``status``, ``price``),
  ``GET /v1/subscriptions/{id}``, ``GET /v1/subscription_items?subscription=…``,
  ``GET /v1/prices/{id}``, ``GET /v1/invoices`` (``customer``, ``subscription``, ``status``),
  ``GET /v1/invoices/{id}``, ``POST /v1/invoices/create_preview`` (the open period).
* ``GET /v2/core/events/{id}``: the full v2 event behind a thin notification;
  ``GET /v2/core/event_destinations/{id}`` (a ping's related object).

Switches (attributes; set them before or during a test)
-------------------------------------------------------
``summary_lag_s``        summaries (and cancellations) trail accepted events by this long (0).
``idempotency_ttl_s``    how long a saved idempotent response is replayed (24 h).
``identifier_ttl_s``     how long an ``identifier`` is deduplicated (24 h).
``auto_meters``          an unknown event name gets a default sum meter on first use (True);
                         False: the event is accepted and reported as ``no_meter``.
``auto_customers``       an unknown customer is created on first use (True); False: the event is
                         accepted and reported as ``meter_event_customer_not_found``.
``meter_errors``         ``"async"`` (Stripe's v1 behaviour: accepted, then error-reported) or
                         ``"sync"`` (400 at once; what a v2 ``/v2/billing/meter_events`` does).
``concurrency_scope``    ``"customer_meter"`` (Stripe's limit) or ``"customer"`` (stricter).
``finalize_grace_s``     an invoice finalizes this long after its period ends (1 h).
``clock_offset_s``       the fake's clock runs this far ahead of real time (``advance()``).
``faults`` / ``fault_rate``  one-off or random faults for meter events: ``"429"``, ``"500"``
                         (an edge error: nothing ran, nothing saved), ``"500_saved"`` (the endpoint
                         failed after execution began: Stripe saves and replays it for the key),
                         ``"timeout"``, ``"drop"`` (accepted, connection dropped, reply lost).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl

import stripe
from aiohttp import web

from testkit.fakes.aioserver import ThreadedAioServer

API_KEY = "sk_test_fake_billingproxy"
WEBHOOK_SECRET = "whsec_test_secret"  # the snapshot-event endpoint's signing secret
EVENT_DESTINATION_SECRET = "whsec_test_event_destination"  # a separate secret per destination
API_VERSION = "2026-10-28.endive"  # stripe/_api_version.py: _ApiVersion.CURRENT in stripe-python 16.1
DAY = 86400


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


def _error(
    status: int, message: str, code: str | None = None, kind: str = "invalid_request_error", **extra: Any
) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "code": code, **extra}}, status=status)


def _iso(ts: float) -> str:
    """v2 API timestamps: RFC 3339 with milliseconds (the v2 event ``created`` field)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def _uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    cancelled: bool = False
    created: float = 0.0  # when Stripe accepted it (the fake's clock)
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the async validation error code; an errored event is never counted
    error_message: str = ""
    cancelled_at: float | None = None
    reported: bool = False  # already named in an error report


@dataclass
class Meter:
    id: str
    event_name: str
    formula: str = "sum"  # docs.stripe.com/api/billing/meter/object: default_aggregation.formula sum|count|last
    customer_key: str = "stripe_customer_id"  # customer_mapping.event_payload_key (default stripe_customer_id)
    value_key: str = "value"  # value_settings.event_payload_key (default value)
    status: str = "active"
    created: int = 0
    display_name: str = ""
    deactivated_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.formula},
            "display_name": self.display_name or self.event_name,
            "event_name": self.event_name,
            "event_time_window": None,
            "livemode": False,
            "status": self.status,
            "status_transitions": {"deactivated_at": self.deactivated_at},
            "updated": self.created,
            "value_settings": {"event_payload_key": self.value_key},
        }


def aggregate(formula: str, events: list[MeterEvent]) -> int:
    """docs.stripe.com/billing/subscriptions/usage-based/meters/configure ("Aggregation formula"):
    sum of the values, count of the events, or the last value (latest timestamp) in the window."""
    if not events:
        return 0
    if formula == "count":
        return len(events)
    if formula == "last":
        return max(events, key=lambda e: (e.timestamp, e.created)).value
    return sum(e.value for e in events)


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
    idempotency_errors: int = 0
    # ---- switches (see the module docstring) ----
    summary_lag_s: float = 30.0  # Stripe gives no bound; issue 18 saw 45 s. 0 turns the lag off
    idempotency_ttl_s: float = DAY
    identifier_ttl_s: float = DAY
    auto_meters: bool = True
    auto_customers: bool = True
    meter_errors: str = "async"
    concurrency_scope: str = "customer_meter"
    finalize_grace_s: float = 3600
    clock_offset_s: float = 0.0
    error_report_samples: int = 2

    def __post_init__(self) -> None:
        super().__init__(self.host, self.port)
        self.meters: dict[str, Meter] = {}
        self.customers: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.reaccepted: list[MeterEvent] = []  # identifiers accepted again after their dedup window
        self._idempotency: dict[str, dict[str, Any]] = {}
        self._idempotency_in_flight: set[str] = set()
        self._in_flight: set[tuple[str, ...]] = set()
        self._lock = threading.RLock()
        self._random = random.Random(self.seed)

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_post("/v1/billing/meter_events", self.create_meter_event)
        r.add_get("/v1/billing/meters", self.list_meters)
        r.add_post("/v1/billing/meters", self.create_meter)
        r.add_get("/v1/billing/meters/{meter_id}", self.retrieve_meter)
        r.add_post("/v1/billing/meters/{meter_id}/deactivate", self.deactivate_meter_handler)
        r.add_post("/v1/billing/meters/{meter_id}/reactivate", self.reactivate_meter_handler)
        r.add_get("/v1/billing/meters/{meter_id}/event_summaries", self.event_summaries)
        r.add_post("/v1/billing/meter_event_adjustments", self.adjust)
        r.add_get("/v1/customers/{customer_id}", self.retrieve_customer)
        r.add_get("/v1/subscriptions", self.list_subscriptions)
        r.add_get("/v1/subscriptions/{subscription_id}", self.retrieve_subscription)
        r.add_get("/v1/subscription_items", self.list_subscription_items)
        r.add_get("/v1/prices/{price_id}", self.retrieve_price)
        r.add_get("/v1/invoices", self.list_invoices)
        r.add_post("/v1/invoices/create_preview", self.preview_invoice)
        r.add_get("/v1/invoices/{invoice_id}", self.retrieve_invoice)
        r.add_get("/v2/core/event_destinations/{destination_id}", self.event_destination)
        r.add_get("/v2/core/events/{event_id}", self.v2_event)
        return app

    # ---- the fake's clock ------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (dedup windows, idempotency TTLs, invoice finalization)."""
        self.clock_offset_s += seconds

    # ---- account setup (what a test configures in "Stripe") ------------------------------------

    def add_meter(
        self,
        event_name: str,
        *,
        formula: str = "sum",
        customer_key: str = "stripe_customer_id",
        value_key: str = "value",
        status: str = "active",
        meter_id: str | None = None,
    ) -> Meter:
        """docs.stripe.com/api/billing/meter/create. An event name belongs to one meter only
        (docs.stripe.com/billing/subscriptions/usage-based/recording-usage: "You can only use an
        event name with a single meter")."""
        with self._lock:
            if any(m.event_name == event_name and m.status == "active" for m in self.meters.values()):
                raise ValueError(f"an active meter with event_name {event_name!r} exists")
            meter = Meter(
                meter_id or f"mtr_fake_{len(self.meters) + 1}",
                event_name,
                formula,
                customer_key,
                value_key,
                status,
                int(self.now()),
            )
            if status == "inactive":
                meter.deactivated_at = meter.created
            self.meters[meter.id] = meter
            return meter

    def meter_by_name(self, event_name: str) -> Meter | None:
        with self._lock:
            matches = [m for m in self.meters.values() if m.event_name == event_name]
        active = [m for m in matches if m.status == "active"]
        return (active or matches or [None])[0]

    def _meter_id(self, event_name: str) -> str:
        """The meter for an event name, created (sum, default keys) if there is none."""
        with self._lock:
            meter = self.meter_by_name(event_name)
            return (meter or self.add_meter(event_name)).id

    def deactivate_meter(self, meter_id: str) -> Meter:
        """docs.stripe.com/api/billing/meter/deactivate: events for an inactive meter are not
        aggregated; Stripe reports them as ``archived_meter`` (SDK:
        events/_v1_billing_meter_error_report_triggered_event.py, ``code`` literals)."""
        with self._lock:
            meter = self.meters[meter_id]
            meter.status, meter.deactivated_at = "inactive", int(self.now())
            return meter

    def add_customer(self, customer_id: str | None = None, *, name: str | None = None, deleted: bool = False) -> dict:
        with self._lock:
            cid = customer_id or _uid("cus")
            customer = {
                "id": cid,
                "object": "customer",
                "created": int(self.now()),
                "email": None,
                "livemode": False,
                "metadata": {},
                "name": name,
            }
            if deleted:  # docs.stripe.com/api/customers/retrieve: a deleted customer is a stub
                customer = {"id": cid, "object": "customer", "deleted": True}
            self.customers[cid] = customer
            return customer

    def add_price(self, meter_id: str, *, unit_amount_decimal: str = "0.0001", currency: str = "usd") -> dict:
        """A metered price on a meter (docs.stripe.com/api/prices/object: ``recurring.meter``,
        ``recurring.usage_type=metered``; SDK stripe/_price.py ``Recurring.meter``)."""
        with self._lock:
            price = {
                "id": _uid("price"),
                "object": "price",
                "active": True,
                "billing_scheme": "per_unit",
                "created": int(self.now()),
                "currency": currency,
                "livemode": False,
                "lookup_key": None,
                "metadata": {},
                "product": _uid("prod"),
                "recurring": {
                    "interval": "month",
                    "interval_count": 1,
                    "meter": meter_id,
                    "trial_period_days": None,
                    "usage_type": "metered",
                },
                "type": "recurring",
                "unit_amount": None,
                "unit_amount_decimal": unit_amount_decimal,
            }
            self.prices[price["id"]] = price
            return price

    def add_subscription(
        self,
        customer: str,
        prices: Iterable[dict | str],
        *,
        period_start: float | None = None,
        period_s: float = 30 * DAY,
        status: str = "active",
        finalize_grace_s: float | None = None,
    ) -> dict:
        """A subscription whose billing periods are [anchor + k·period_s, anchor + (k+1)·period_s).
        Since API 2025-03-31.basil the current period lives on each item
        (SDK stripe/_subscription_item.py ``current_period_start``/``current_period_end``)."""
        with self._lock:
            if customer not in self.customers:
                self.add_customer(customer)
            anchor = int(self.now() if period_start is None else period_start)
            sub_id = _uid("sub")
            items = []
            for price in prices:
                price_obj = self.prices[price] if isinstance(price, str) else price
                items.append(
                    {
                        "id": _uid("si"),
                        "object": "subscription_item",
                        "created": anchor,
                        "metadata": {},
                        "price": price_obj,
                        "quantity": None,
                        "subscription": sub_id,
                    }
                )
            sub = {
                "id": sub_id,
                "object": "subscription",
                "billing_cycle_anchor": anchor,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "created": anchor,
                "currency": "usd",
                "customer": customer,
                "ended_at": None,
                "items": {"object": "list", "data": items, "has_more": False, "url": "/v1/subscription_items"},
                "livemode": False,
                "metadata": {},
                "status": status,
                "_period_s": period_s,
                "_finalize_grace_s": finalize_grace_s,
            }
            self.subscriptions[sub_id] = sub
            return self._public_subscription(sub)

    def link_customer(self, customer: str, *event_names: str, **subscription_options: Any) -> dict:
        """Convenience: the customer, a meter per event name (existing or new) and a subscription
        with one metered price per meter — a correctly configured Stripe account."""
        prices = [self.add_price(self._meter_id(name)) for name in event_names]
        return self.add_subscription(customer, prices, **subscription_options)

    def set_subscription_status(self, sub_id: str, status: str) -> dict:
        with self._lock:
            sub = self.subscriptions[sub_id]
            sub["status"] = status
            if status == "canceled":
                sub["canceled_at"] = sub["ended_at"] = int(self.now())
            return self._public_subscription(sub)

    def _period(self, sub: dict, ts: float) -> tuple[int, int]:
        anchor, length = sub["billing_cycle_anchor"], sub["_period_s"]
        k = int((ts - anchor) // length)
        return int(anchor + k * length), int(anchor + (k + 1) * length)

    def _public_subscription(self, sub: dict) -> dict:
        start, end = self._period(sub, self.now())
        public = {k: v for k, v in sub.items() if not k.startswith("_")}
        items = [{**item, "current_period_start": start, "current_period_end": end} for item in sub["items"]["data"]]
        public["items"] = {**sub["items"], "data": items}
        return public

    # ---- what the tests read -------------------------------------------------------------

    def _valid(self) -> list[MeterEvent]:
        with self._lock:
            return [e for e in self.events.values() if e.error is None]

    def totals(self, event_name: str | None = None) -> dict[str, int]:
        """Accepted, valid, not cancelled values per customer (summed, whatever the formula)."""
        sums: Counter[str] = Counter()
        for event in self._valid():
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

    def identifiers_accepted_twice(self) -> set[str]:
        """Identifiers Stripe accepted again because their 24 h dedup window had passed."""
        with self._lock:
            return {e.identifier for e in self.reaccepted}

    def errored(self, code: str | None = None) -> list[MeterEvent]:
        with self._lock:
            return [e for e in self.events.values() if e.error and code in (None, e.error)]

    def _events_for(self, meter: Meter, customer: str) -> list[MeterEvent]:
        return [e for e in self._valid() if e.event_name == meter.event_name and e.customer == customer]

    def billed(self, customer: str, event_name: str, start: float, end: float) -> int:
        """The meter's aggregate for a customer over [start, end), as Stripe would bill it."""
        meter = self.meter_by_name(event_name)
        if meter is None:
            return 0
        events = [e for e in self._events_for(meter, customer) if not e.cancelled and start <= e.timestamp < end]
        return aggregate(meter.formula, events)

    def _finalized_at(self, sub: dict, period_end: int) -> float:
        grace = sub["_finalize_grace_s"]
        return period_end + (self.finalize_grace_s if grace is None else grace)

    def invoices(self, customer: str | None = None, *, include_draft: bool = False) -> list[dict]:
        """Invoices of closed billing periods. A period's invoice is created at its end and finalized
        ``finalize_grace_s`` later (docs.stripe.com/billing/subscriptions/usage-based/
        configure-grace-period: "All invoices have a default finalization grace period of 1 hour.
        During the finalization grace period, you can continue to report usage for the previous
        billing period"). Usage Stripe receives after finalization, with a timestamp in that
        period, is accepted and shows in summaries but is on no invoice."""
        now = self.now()
        result = []
        with self._lock:
            subs = [s for s in self.subscriptions.values() if customer in (None, s["customer"])]
            for sub in subs:
                start = sub["billing_cycle_anchor"]
                while start + sub["_period_s"] <= now:
                    end = int(start + sub["_period_s"])
                    finalized_at = self._finalized_at(sub, end)
                    final = finalized_at <= now
                    if final or include_draft:
                        result.append(self._invoice(sub, int(start), end, finalized_at if final else None))
                    start = end
        return result

    def _invoice(self, sub: dict, start: int, end: int, finalized_at: float | None) -> dict:
        cutoff = finalized_at if finalized_at is not None else self.now()
        lines = []
        for item in sub["items"]["data"]:
            price = item["price"]
            meter = self.meters.get((price.get("recurring") or {}).get("meter") or "")
            if meter is None:
                continue
            counted = [
                e
                for e in self._events_for(meter, sub["customer"])
                if start <= e.timestamp < end
                and e.created + self.summary_lag_s <= cutoff
                and not (e.cancelled and (e.cancelled_at or 0) <= cutoff)
            ]
            # recording-usage-api ("Usage values"): a negative cycle total is billed as 0.
            quantity = max(0, aggregate(meter.formula, counted))
            unit = Decimal(price.get("unit_amount_decimal") or "0")
            amount = int((unit * quantity).to_integral_value(ROUND_HALF_UP))
            lines.append(
                {
                    "id": f"il_{item['id']}_{start}",
                    "object": "line_item",
                    "amount": amount,
                    "currency": price["currency"],
                    "meter": meter.id,
                    "event_name": meter.event_name,
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub["id"], "subscription_item": item["id"]},
                    },
                    "period": {"start": start, "end": end},
                    "pricing": {
                        "type": "price_details",
                        "price_details": {"price": price["id"], "product": price["product"]},
                        "unit_amount_decimal": price.get("unit_amount_decimal"),
                    },
                    "quantity": quantity,
                }
            )
        total = sum(line["amount"] for line in lines)
        return {
            "id": "in_" + hashlib.sha256(f"{sub['id']}:{start}".encode()).hexdigest()[:20],
            "object": "invoice",
            "amount_due": total,
            "created": end,
            "currency": "usd",
            "customer": sub["customer"],
            "lines": {"object": "list", "data": lines, "has_more": False, "url": "/v1/invoices/lines"},
            "livemode": False,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub["id"]}},
            "period_start": start,
            "period_end": end,
            "status": "open" if finalized_at is not None else "draft",
            "status_transitions": {"finalized_at": int(finalized_at) if finalized_at is not None else None},
            "total": total,
        }

    def invoiced(self, customer: str | None = None) -> dict[tuple[str, int], dict[str, int]]:
        """What finalized invoices bill: {(customer, period start): {event name: quantity}}."""
        result: dict[tuple[str, int], dict[str, int]] = {}
        for invoice in self.invoices(customer):
            key = (invoice["customer"], invoice["period_start"])
            for line in invoice["lines"]["data"]:
                result.setdefault(key, {})
                result[key][line["event_name"]] = result[key].get(line["event_name"], 0) + line["quantity"]
        return result

    def uninvoiced(self, customer: str | None = None) -> list[MeterEvent]:
        """Valid events counted in summaries but on no invoice: their period's invoice was final
        before Stripe received them (or they fall in no subscription's period)."""
        with self._lock:
            subs = [s for s in self.subscriptions.values() if customer in (None, s["customer"])]
        late = []
        for sub in subs:
            meters = {(i["price"].get("recurring") or {}).get("meter") for i in sub["items"]["data"] if i.get("price")}
            names = {self.meters[m].event_name for m in meters if m in self.meters}
            for event in self._valid():
                if event.customer != sub["customer"] or event.event_name not in names or event.cancelled:
                    continue
                if event.timestamp < sub["billing_cycle_anchor"]:
                    late.append(event)
                    continue
                _, end = self._period(sub, event.timestamp)
                if end <= self.now() and event.created + self.summary_lag_s > self._finalized_at(sub, end):
                    late.append(event)
        return late

    # ---- handlers ------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    def _next_fault(self) -> str | None:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
            for fault, rate in self.fault_rate.items():
                if self._random.random() < rate:
                    return fault
        return None

    def _saved(self, key: str | None, path: str, params: dict) -> web.Response | None:
        """docs.stripe.com/api/idempotent_requests: "Stripe saves the status code and body of the
        first request made with a given idempotency key after endpoint execution begins. Retries
        with the same key return the saved response, including 500 errors." Keys can be pruned
        after 24 h ("We generate a new request if a key is reused after the original is pruned"),
        and "The idempotency layer compares incoming parameters to those of the original request
        and errors if they're not the same" (type ``idempotency_error``: SDK
        _api_requestor.py specific_v1_api_error maps it to ``IdempotencyError``)."""
        if not key:
            return None
        with self._lock:
            saved = self._idempotency.get(key)
            if saved and self.now() - saved["at"] >= self.idempotency_ttl_s:
                del self._idempotency[key]
                saved = None
            if saved is None:
                return None
            if saved["path"] != path or saved["params"] != params:
                self.idempotency_errors += 1
                return _error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first "
                    f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                    None,
                    "idempotency_error",
                )
            self.replays += 1
            return web.json_response(
                saved["body"], status=saved["status"], headers={"Idempotent-Replayed": "true", "Idempotency-Key": key}
            )

    def _key_in_use(self, key: str | None) -> web.Response | None:
        """ "...or the request conflicts with another request that's executing concurrently, we
        don't save the idempotent result" (docs.stripe.com/api/idempotent_requests): 409."""
        with self._lock:
            if not key or key not in self._idempotency_in_flight:
                return None
        return _error(
            409,
            "There is currently another in-progress request using this Idempotent Key (that probably means "
            "you submitted twice, and the other request is still going through). Please try again later.",
            "idempotency_key_in_use",
            "idempotency_error",
        )

    def _save(self, key: str | None, path: str, params: dict, status: int, body: dict) -> None:
        if key:
            with self._lock:
                self._idempotency[key] = {
                    "path": path,
                    "params": params,
                    "status": status,
                    "body": body,
                    "at": self.now(),
                }

    async def create_meter_event(self, request: web.Request) -> web.StreamResponse:
        self.calls["meter_events"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided", kind="invalid_request_error")
        params = parse_form(parse_qsl(await request.text()))
        key = request.headers.get("Idempotency-Key")
        in_use = self._key_in_use(key)
        if in_use is not None:
            return in_use
        payload = params.get("payload") if isinstance(params.get("payload"), dict) else {}
        event_name = params.get("event_name") or ""
        # docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api ("Rate limits"):
        # "one concurrent call per customer per meter".
        customer = payload.get("stripe_customer_id", "")
        slot = (customer, event_name) if self.concurrency_scope == "customer_meter" else (customer,)
        with self._lock:
            if slot in self._in_flight:
                self.concurrency_violations += 1
                return _error(429, "Too many concurrent requests for this customer", "rate_limit", "rate_limit_error")
            self._in_flight.add(slot)
            if key:
                self._idempotency_in_flight.add(key)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            fault = self._next_fault()
            if fault == "429":
                return _error(429, "Request rate limit exceeded", "rate_limit", "rate_limit_error")
            if fault == "500":  # failed before the endpoint ran (an edge error): nothing saved
                return _error(500, "An unknown error occurred", kind="api_error")
            if fault == "timeout":
                with self._lock:
                    self._in_flight.discard(slot)  # Stripe gave up on it too: nothing was recorded
                    self._idempotency_in_flight.discard(key or "")
                await asyncio.sleep(60)
                return _error(504, "Gateway timeout", kind="api_error")
            # Faults are drawn for every call, replays included: a replayed reply can be lost too.
            response = self._saved(key, request.path, params)
            if response is None and fault == "500_saved":
                # Execution began and failed: the 500 is saved and replayed for this key.
                body = {"error": {"type": "api_error", "message": "An unknown error occurred", "code": None}}
                self._save(key, request.path, params, 500, body)
                return web.json_response(body, status=500)
            if response is None:
                response = self._create(params, key, request.path)
            if fault == "drop":
                request.transport.close()  # processed, but the client never hears back
            return response
        finally:
            with self._lock:
                self._in_flight.discard(slot)
                self._idempotency_in_flight.discard(key or "")

    def _validation_error(self, meter: Meter | None, payload: dict, customer: str) -> tuple[str | None, str]:
        """The async validation codes (SDK events/_v1_billing_meter_error_report_triggered_event.py,
        ``code``): no_meter, archived_meter, meter_event_no_customer_defined,
        meter_event_customer_not_found, meter_event_invalid_value."""
        if meter is None:
            return "no_meter", "No meter is configured for this event name"
        if meter.status != "active":
            return "archived_meter", f"Meter {meter.id} is inactive"
        if not customer:
            return "meter_event_no_customer_defined", f"payload[{meter.customer_key}] is missing"
        if customer not in self.customers or self.customers[customer].get("deleted"):
            return "meter_event_customer_not_found", f"No customer {customer}"
        if meter.formula != "count":
            # recording-usage-api ("Usage values"): "only accepts whole number values".
            raw = payload.get(meter.value_key)
            if raw is None or not str(raw).lstrip("-").isdigit():
                return "meter_event_invalid_value", f"payload[{meter.value_key}] must be a whole number"
        return None, ""

    def _create(self, params: dict, key: str | None, path: str) -> web.Response:
        payload = params.get("payload")
        event_name = params.get("event_name")
        if not event_name or not isinstance(payload, dict):
            # Parameter validation fails before execution: nothing is saved for the key.
            missing = "event_name" if not event_name else "payload"
            return _error(400, f"Missing required param: {missing}.", "parameter_missing", param=missing)
        now = self.now()
        try:
            timestamp = int(params.get("timestamp") or int(now))
        except ValueError:
            return _error(400, "Invalid integer: timestamp", "parameter_invalid_integer", param="timestamp")
        # recording-usage-api ("Event timestamps"): "within the past 35 calendar days and isn't more
        # than 5 minutes in the future". Refused as parameter validation (nothing saved for the key).
        if timestamp < now - 35 * DAY:
            return _error(
                400,
                "Timestamp must be within the past 35 calendar days.",
                "timestamp_too_far_in_past",
                param="timestamp",
            )
        if timestamp > now + 300:
            return _error(
                400,
                "Timestamp must not be more than 5 minutes in the future.",
                "timestamp_in_future",
                param="timestamp",
            )
        identifier = params.get("identifier") or _uid("mev")
        with self._lock:
            if self.auto_meters and self.meter_by_name(event_name) is None:
                self.add_meter(event_name)
            meter = self.meter_by_name(event_name)
            customer_key = meter.customer_key if meter else "stripe_customer_id"
            customer = str(payload.get(customer_key) or "")
            if self.auto_customers and customer and customer not in self.customers:
                self.add_customer(customer)
            code, message = self._validation_error(meter, payload, customer)
            if code and self.meter_errors == "sync":
                return _error(400, message, code)
            # identifier: "We will enforce uniqueness within a rolling period of at least 24 hours"
            # (SDK params/billing/_meter_event_create_params.py). The error shape is not documented.
            previous = self.events.get(identifier)
            if previous is not None:
                if now - previous.created < self.identifier_ttl_s:
                    self.duplicate_identifiers += 1
                    body = {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "duplicate_meter_event",
                            "message": f"An event with identifier {identifier} already exists",
                        }
                    }
                    self._save(key, path, params, 400, body)
                    return web.json_response(body, status=400)
                self.reaccepted.append(previous)
                self.events[f"{identifier}@{previous.created}"] = self.events.pop(identifier)
            value_key = meter.value_key if meter else "value"
            raw_value = str(payload.get(value_key, "0"))
            value = int(raw_value) if raw_value.lstrip("-").isdigit() else 0
            if meter is not None and meter.formula == "count":
                value = 1
            event = MeterEvent(identifier, event_name, customer, value, timestamp, created=now, payload=dict(payload))
            event.error, event.error_message = code, message
            self.events[identifier] = event
            body = {
                "object": "billing.meter_event",
                "created": int(now),
                "event_name": event_name,
                "identifier": identifier,
                "livemode": False,
                "payload": payload,
                "timestamp": timestamp,
            }
            self._save(key, path, params, 200, body)
        return web.json_response(body)

    def _page(self, request: web.Request, items: list[dict]) -> web.Response:
        """List pagination (docs.stripe.com/api/pagination): ``limit`` 1 to 100 (default 10),
        ``starting_after`` an object id."""
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            return _error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= 100:
            return _error(400, "limit must be between 1 and 100", param="limit")
        after = request.query.get("starting_after")
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                return _error(400, f"No such object: '{after}'", "resource_missing", param="starting_after")
            items = items[ids.index(after) + 1 :]
        return web.json_response(
            {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": request.path}
        )

    async def list_meters(self, request: web.Request) -> web.Response:
        self.calls["meters"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        status = request.query.get("status")
        with self._lock:
            data = [m.to_json() for m in self.meters.values() if status in (None, m.status)]
        return self._page(request, data)

    async def create_meter(self, request: web.Request) -> web.Response:
        self.calls["meters_create"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        params = parse_form(parse_qsl(await request.text()))
        try:
            meter = self.add_meter(
                params["event_name"],
                formula=params.get("default_aggregation", {}).get("formula", "sum"),
                customer_key=params.get("customer_mapping", {}).get("event_payload_key", "stripe_customer_id"),
                value_key=params.get("value_settings", {}).get("event_payload_key", "value"),
            )
        except (KeyError, ValueError) as exc:
            return _error(400, str(exc))
        meter.display_name = params.get("display_name", "")
        return web.json_response(meter.to_json())

    def _meter(self, request: web.Request) -> Meter | web.Response:
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        meter = self.meters.get(request.match_info["meter_id"])
        if meter is None:
            return _error(404, f"No such billing meter: '{request.match_info['meter_id']}'", "resource_missing")
        return meter

    async def retrieve_meter(self, request: web.Request) -> web.Response:
        meter = self._meter(request)
        return meter if isinstance(meter, web.Response) else web.json_response(meter.to_json())

    async def deactivate_meter_handler(self, request: web.Request) -> web.Response:
        meter = self._meter(request)
        if isinstance(meter, web.Response):
            return meter
        return web.json_response(self.deactivate_meter(meter.id).to_json())

    async def reactivate_meter_handler(self, request: web.Request) -> web.Response:
        meter = self._meter(request)
        if isinstance(meter, web.Response):
            return meter
        meter.status, meter.deactivated_at = "active", None
        return web.json_response(meter.to_json())

    async def event_summaries(self, request: web.Request) -> web.Response:
        """docs.stripe.com/api/billing/meter-event-summary/list (SDK
        params/billing/_meter_event_summary_list_params.py): start (inclusive) and end (exclusive)
        aligned with minute boundaries; ``value_grouping_window`` hour/day needs hour/UTC-day
        aligned bounds; without it one summary covers the range. Eventually consistent
        (recording-usage-api: "Stripe processes meter events asynchronously, so aggregated usage in
        meter event summaries and on upcoming invoices might not immediately reflect recently
        received meter events"): an event counts from ``created + summary_lag_s``."""
        self.calls["event_summaries"] += 1
        meter = self._meter(request)
        if isinstance(meter, web.Response):
            return meter
        query = request.query
        try:
            customer, start, end = query["customer"], int(query["start_time"]), int(query["end_time"])
        except (KeyError, ValueError):
            return _error(400, "customer, start_time and end_time are required")
        if start % 60 or end % 60:
            return _error(400, "start_time and end_time must be aligned with minute boundaries")
        if end <= start:
            return _error(400, "end_time must be after start_time")
        window = query.get("value_grouping_window")
        if window not in (None, "hour", "day"):
            return _error(400, f"Invalid value_grouping_window: {window}", param="value_grouping_window")
        step = {"hour": 3600, "day": DAY}.get(window or "", end - start)
        if window and (start % step or end % step):
            return _error(400, f"start_time and end_time must be aligned with {window} boundaries")
        visible_at = self.now() - self.summary_lag_s
        buckets: dict[int, list[MeterEvent]] = {}
        for event in self._events_for(meter, customer):
            if event.created > visible_at or not start <= event.timestamp < end:
                continue
            if event.cancelled and (event.cancelled_at or 0) <= visible_at:
                continue
            buckets.setdefault(start + (event.timestamp - start) // step * step, []).append(event)
        data = [
            {
                "id": f"mtrusg_{meter.id}_{bucket}",
                "object": "billing.meter_event_summary",
                "aggregated_value": float(aggregate(meter.formula, events)),
                "start_time": bucket,
                "end_time": bucket + step,
                "livemode": False,
                "meter": meter.id,
            }
            for bucket, events in sorted(buckets.items(), reverse=True)
        ]
        return self._page(request, data)

    async def adjust(self, request: web.Request) -> web.Response:
        """docs.stripe.com/api/billing/meter-event-adjustment/create: ``type=cancel`` with
        ``cancel[identifier]``; "You can only cancel events within 24 hours of Stripe receiving
        them" (recording-usage-api, "Cancel meter events"). Applied asynchronously (``pending``)."""
        self.calls["meter_event_adjustments"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        params = parse_form(parse_qsl(await request.text()))
        key = request.headers.get("Idempotency-Key")
        replay = self._saved(key, request.path, params)
        if replay is not None:
            return replay
        identifier = (params.get("cancel") or {}).get("identifier")
        now = self.now()
        with self._lock:
            event = self.events.get(identifier or "")
            if params.get("type") != "cancel" or event is None or event.event_name != params.get("event_name"):
                return _error(400, f"No meter event with identifier {identifier!r} to cancel")
            if now - event.created > DAY:
                return _error(400, f"Meter event {identifier} is older than 24 hours and can no longer be cancelled")
            event.cancelled, event.cancelled_at = True, now
        body = {
            "id": _uid("mtrea"),
            "object": "billing.meter_event_adjustment",
            "event_name": event.event_name,
            "status": "pending",
            "type": "cancel",
            "cancel": {"identifier": identifier},
            "livemode": False,
        }
        self._save(key, request.path, params, 200, body)
        return web.json_response(body)

    async def retrieve_customer(self, request: web.Request) -> web.Response:
        self.calls["customers"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        customer = self.customers.get(request.match_info["customer_id"])
        if customer is None:
            return _error(404, f"No such customer: '{request.match_info['customer_id']}'", "resource_missing")
        return web.json_response(customer)

    def _subscriptions(self, query: Any) -> list[dict]:
        """docs.stripe.com/api/subscriptions/list: "By default, returns a list of subscriptions
        that have not been canceled"; ``status=all`` includes them."""
        status = query.get("status")
        with self._lock:
            subs = [self._public_subscription(s) for s in self.subscriptions.values()]
        subs = [s for s in subs if query.get("customer") in (None, s["customer"])]
        if status is None:
            subs = [s for s in subs if s["status"] != "canceled"]
        elif status != "all":
            subs = [s for s in subs if s["status"] == status]
        if query.get("price"):
            subs = [s for s in subs if any(i["price"]["id"] == query["price"] for i in s["items"]["data"])]
        return subs

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        self.calls["subscriptions"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        return self._page(request, self._subscriptions(request.query))

    async def retrieve_subscription(self, request: web.Request) -> web.Response:
        self.calls["subscriptions"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        sub = self.subscriptions.get(request.match_info["subscription_id"])
        if sub is None:
            return _error(404, f"No such subscription: '{request.match_info['subscription_id']}'", "resource_missing")
        with self._lock:
            return web.json_response(self._public_subscription(sub))

    async def list_subscription_items(self, request: web.Request) -> web.Response:
        self.calls["subscription_items"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        sub = self.subscriptions.get(request.query.get("subscription", ""))
        if sub is None:  # docs.stripe.com/api/subscription_items/list: subscription is required
            return _error(400, "Missing required param: subscription.", "parameter_missing", param="subscription")
        with self._lock:
            items = self._public_subscription(sub)["items"]["data"]
        return self._page(request, items)

    async def retrieve_price(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        price = self.prices.get(request.match_info["price_id"])
        if price is None:
            return _error(404, f"No such price: '{request.match_info['price_id']}'", "resource_missing")
        return web.json_response(price)

    async def list_invoices(self, request: web.Request) -> web.Response:
        self.calls["invoices"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        query = request.query
        invoices = self.invoices(query.get("customer"), include_draft=True)
        if query.get("subscription"):
            invoices = [
                i for i in invoices if i["parent"]["subscription_details"]["subscription"] == query["subscription"]
            ]
        if query.get("status"):
            invoices = [i for i in invoices if i["status"] == query["status"]]
        invoices.sort(key=lambda i: i["created"], reverse=True)  # newest first, as Stripe lists
        return self._page(request, invoices)

    async def retrieve_invoice(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        for invoice in self.invoices(include_draft=True):
            if invoice["id"] == request.match_info["invoice_id"]:
                return web.json_response(invoice)
        return _error(404, f"No such invoice: '{request.match_info['invoice_id']}'", "resource_missing")

    async def preview_invoice(self, request: web.Request) -> web.Response:
        """docs.stripe.com/api/invoices/create_preview (the upcoming invoice since API
        2025-03-31.basil): the open period's invoice as it stands, for ``customer`` or
        ``subscription``."""
        self.calls["invoice_previews"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        params = parse_form(parse_qsl(await request.text()))
        with self._lock:
            subs = [
                s
                for s in self.subscriptions.values()
                if s["status"] != "canceled"
                and (params.get("subscription") in (None, s["id"]))
                and (params.get("customer") in (None, s["customer"]))
            ]
            if not subs or not (params.get("customer") or params.get("subscription")):
                return _error(400, "No upcoming invoices for customer or subscription", "invoice_upcoming_none")
            start, end = self._period(subs[0], self.now())
            invoice = self._invoice(subs[0], start, end, None)
        invoice["id"] = "upcoming_" + invoice["id"]
        return web.json_response(invoice)

    async def event_destination(self, request: web.Request) -> web.Response:
        """What a ping's ``fetch_related_object()`` reads (docs.stripe.com/api/v2/core/event_destinations)."""
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        destination = request.match_info["destination_id"]
        return web.json_response(
            {
                "id": destination,
                "object": "v2.core.event_destination",
                "created": _iso(self.now()),
                "event_payload": "thin",
                "livemode": False,
                "name": "billingproxy",
                "status": "enabled",
                "type": "webhook_endpoint",
                "webhook_endpoint": {"signing_secret": None, "url": "https://example.invalid/stripe/webhook"},
            }
        )

    async def v2_event(self, request: web.Request) -> web.Response:
        self.calls["v2_events"] += 1
        if not self._authorized(request):
            return _error(401, "Invalid API Key provided")
        event = self.v2_events.get(request.match_info["event_id"])
        if event is None:
            return _error(404, "no such event", "resource_missing")
        return web.json_response(event)

    # ---- events: snapshot (v1) and thin (v2) ----------------------------------------------

    def snapshot_event(
        self, kind: str, obj: dict, *, created: float | None = None, previous_attributes: dict | None = None
    ) -> dict:
        """A v1 snapshot event as a webhook endpoint receives it (docs.stripe.com/api/events/object;
        docs.stripe.com/event-destinations#snapshot-payload): the object as it was when the event
        happened, ``created`` in seconds."""
        data: dict[str, Any] = {"object": json.loads(json.dumps(obj))}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        return {
            "id": _uid("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.now() if created is None else created),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }

    def subscription_event(self, sub_id: str, kind: str = "customer.subscription.updated", **kwargs: Any) -> dict:
        """A snapshot of the subscription as it is now (``set_subscription_status`` first)."""
        with self._lock:
            return self.snapshot_event(kind, self._public_subscription(self.subscriptions[sub_id]), **kwargs)

    def add_v2_event(self, kind: str, related_object: dict | None, data: dict | None) -> dict:
        """Store a v2 event (served by GET /v2/core/events/{id}) and return its thin notification:
        docs.stripe.com/event-destinations#thin-payload — id, object ``v2.core.event``, type,
        created (RFC 3339), livemode, related_object, no data (SDK v2/core/_event.py
        ``EventNotification``)."""
        event_id = f"evt_test_{uuid.uuid4().hex}"
        event = {
            "id": event_id,
            "object": "v2.core.event",
            "type": kind,
            "created": _iso(self.now()),
            "livemode": False,
            "context": None,
            "reason": None,
            "related_object": related_object,
            "data": data,
        }
        if related_object is None:
            del event["related_object"]
        self.v2_events[event_id] = event
        return thin(event)

    def ping_event(self) -> dict:
        """The test ping an event destination sends (``v2.core.event_destination.ping``; SDK
        events/_v2_core_event_destination_ping_event.py): its related object is the destination."""
        destination = "ed_test_" + uuid.uuid4().hex[:20]
        url = f"/v2/core/event_destinations/{destination}"
        related = {"id": destination, "type": "v2.core.event_destination", "url": url}
        return self.add_v2_event("v2.core.event_destination.ping", related, {})

    def meter_error_reports(self) -> list[dict]:
        """Thin ``v1.billing.meter.error_report_triggered`` notifications (one per meter) for the
        errored events not yet reported, and ``v1.billing.meter.no_meter_found`` for events with no
        meter (docs.stripe.com/api/v2/core/events/event-types). Each names at most
        ``error_report_samples`` sample events per error code, with the total ``error_count``
        (SDK events/_v1_billing_meter_error_report_triggered_event.py: "A list of sample errors").
        """
        with self._lock:
            pending = [e for e in self.events.values() if e.error and not e.reported]
            for event in pending:
                event.reported = True
        groups: dict[str | None, list[MeterEvent]] = {}
        for event in pending:
            meter = self.meter_by_name(event.event_name) if event.error != "no_meter" else None
            groups.setdefault(meter.id if meter else None, []).append(event)
        notifications = []
        for meter_id, events in groups.items():
            by_code: dict[str, list[MeterEvent]] = {}
            for event in events:
                by_code.setdefault(event.error or "", []).append(event)
            data = {
                "developer_message_summary": f"{len(events)} meter events failed validation",
                "validation_start": _iso(min(e.created for e in events)),
                "validation_end": _iso(max(e.created for e in events) + 1),
                "reason": {
                    "error_count": len(events),
                    "error_types": [
                        {
                            "code": code,
                            "error_count": len(errs),
                            "sample_errors": [
                                {"error_message": e.error_message, "request": {"identifier": e.identifier}}
                                for e in errs[: self.error_report_samples]
                            ],
                        }
                        for code, errs in by_code.items()
                    ],
                },
            }
            if meter_id is None:
                notifications.append(self.add_v2_event("v1.billing.meter.no_meter_found", None, data))
            else:
                related = {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}
                notifications.append(self.add_v2_event("v1.billing.meter.error_report_triggered", related, data))
        return notifications


def thin(event: dict) -> dict:
    """The thin notification for a stored v2 event: everything but ``data`` and ``changes``."""
    return {k: v for k, v in event.items() if k not in ("data", "changes")}


# ---- webhook and event-destination deliveries ---------------------------------------------


def signed(event: dict, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stripe sends: ``Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")``
    (docs.stripe.com/webhooks#verify-manually), computed with the SDK's own
    ``WebhookSignature.generate_signature_header`` (stripe/_webhook.py). Snapshot endpoints and
    event destinations each have their own ``whsec_`` secret."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}


def delivery_order(events: list[dict], *, duplicates: int = 1, order: str = "given", seed: int = 0) -> list[dict]:
    """docs.stripe.com/webhooks#handle-duplicate-events ("Webhook endpoints might occasionally
    receive the same event more than once") and #event-ordering ("Stripe doesn't guarantee the
    delivery of events in the order that they're generated"): each event ``duplicates`` times, in
    ``order`` ``given``, ``reverse`` or ``shuffle`` (seeded)."""
    sequence = [event for event in events for _ in range(duplicates)]
    if order == "reverse":
        sequence.reverse()
    elif order == "shuffle":
        random.Random(seed).shuffle(sequence)
    elif order != "given":
        raise ValueError(f"unknown order {order!r}")
    return sequence


def deliver(
    target: str | Callable[[bytes, dict[str, str]], Any],
    events: list[dict],
    secret: str = WEBHOOK_SECRET,
    *,
    duplicates: int = 1,
    order: str = "given",
    seed: int = 0,
    timestamp: int | None = None,
) -> list[Any]:
    """Sign and POST each event (snapshot or thin) to a URL, or hand it to ``target(body, headers)``
    (e.g. ``lambda body, headers: client.post("/stripe/webhook", content=body, headers=headers)``).
    Returns the responses in delivery order."""
    import httpx

    responses = []
    for event in delivery_order(events, duplicates=duplicates, order=order, seed=seed):
        body, headers = signed(event, secret, timestamp)
        if isinstance(target, str):
            responses.append(httpx.post(target, content=body, headers=headers, timeout=30))
        else:
            responses.append(target(body, headers))
    return responses
