"""Is the Stripe account set up to bill what we send? (``python -m billingproxy stripe check``)

A meter decides what Stripe bills from our events: ``default_aggregation.formula`` (``sum`` adds
our per-window values; ``last`` would bill one window, ``count`` the number of events), and the
payload keys it reads the customer and the value from. A meter that differs silently bills the
wrong amount, so the relay holds the entries of a misconfigured meter instead of posting them.
A linked customer needs a subscription item priced on each meter, or its usage is counted and
never invoiced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from billingproxy.billing.stripe_api import CUSTOMER_KEY, VALUE_KEY, StripeApi
from billingproxy.config import Meter

__all__ = ["LIVE_SUBSCRIPTIONS", "MeterCheck", "Problem", "check_account", "customer_problems", "meter_problems"]

# Subscriptions that invoice usage (docs.stripe.com/api/subscriptions/object, ``status``).
LIVE_SUBSCRIPTIONS = {"active", "trialing", "past_due"}


@dataclass(frozen=True)
class Problem:
    subject: str  # "meter llm_cost_microusd", "customer cus_123 (tenant acme)"
    message: str
    meter: str | None = None  # the event name the problem makes unbillable
    customer: str | None = None

    def line(self) -> str:
        return f"{self.subject}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "message": self.message, "meter": self.meter, "customer": self.customer}


def _active_meter(stripe_meters: list[dict[str, Any]], event_name: str) -> dict[str, Any] | None:
    matches = [m for m in stripe_meters if m.get("event_name") == event_name]
    active = [m for m in matches if m.get("status") == "active"]
    return (active or matches or [None])[0]


def meter_problems(
    stripe_meters: list[dict[str, Any]], meters: Iterable[Meter]
) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """The meter object per event name we post to, and what is wrong with each."""
    found: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for meter in meters:
        name = meter.event_name
        subject = f"meter {name}"
        stripe_meter = _active_meter(stripe_meters, name)
        if stripe_meter is None:
            problems.append(Problem(subject, "no meter has this event name (events would be refused)", name))
            continue
        found[name] = stripe_meter
        subject = f"meter {name} ({stripe_meter.get('id')})"
        if stripe_meter.get("status") != "active":
            problems.append(Problem(subject, f"status is {stripe_meter.get('status')!r}, must be 'active'", name))
        formula = (stripe_meter.get("default_aggregation") or {}).get("formula")
        if formula != "sum":
            problems.append(Problem(subject, f"aggregation is {formula!r}, must be 'sum'", name))
        customer_key = (stripe_meter.get("customer_mapping") or {}).get("event_payload_key")
        if customer_key != CUSTOMER_KEY:
            problems.append(
                Problem(subject, f"customer mapping key is {customer_key!r}, we send {CUSTOMER_KEY!r}", name)
            )
        value_key = (stripe_meter.get("value_settings") or {}).get("event_payload_key")
        if value_key != VALUE_KEY:
            problems.append(Problem(subject, f"value key is {value_key!r}, we send {VALUE_KEY!r}", name))
    return found, problems


def customer_problems(api: StripeApi, customer: str, label: str, found: dict[str, dict[str, Any]]) -> list[Problem]:
    """The customer exists and has a live subscription item priced on each meter we post to."""
    subject = f"customer {customer} ({label})"
    record = api.customer(customer)
    if record is None:
        return [Problem(subject, "no such customer in Stripe", customer=customer)]
    if record.get("deleted"):
        return [Problem(subject, "the customer is deleted", customer=customer)]
    priced: set[str] = set()
    for sub in api.subscriptions(customer):
        if sub.get("status") not in LIVE_SUBSCRIPTIONS:
            continue
        for item in (sub.get("items") or {}).get("data") or []:
            meter_id = ((item.get("price") or {}).get("recurring") or {}).get("meter")
            if meter_id:
                priced.add(meter_id)
    return [
        Problem(subject, f"no live subscription item priced on meter {name} ({meter['id']})", name, customer)
        for name, meter in found.items()
        if meter.get("id") not in priced
    ]


def check_account(api: StripeApi, meters: Iterable[Meter], customers: Iterable[tuple[str, str]]) -> list[Problem]:
    """Every problem with the meters we post to and the linked ``(customer, label)`` pairs."""
    found, problems = meter_problems(api.meters(), meters)
    for customer, label in customers:
        problems.extend(customer_problems(api, customer, label, found))
    return problems


class MeterCheck:
    """The relay's cached meter check: event names whose entries must be held, with the reason."""

    def __init__(self, api: StripeApi, meters: Iterable[Meter], ttl_s: float = 300.0) -> None:
        self.api = api
        self.meters = tuple(meters)
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._held: dict[str, str] = {}
        self._ids: dict[str, str] = {}

    def _refresh(self) -> None:
        if not self.meters or time.monotonic() - self._checked_at < self.ttl_s:
            return
        found, problems = meter_problems(self.api.meters(), self.meters)
        held: dict[str, str] = {}
        for problem in problems:
            if problem.meter:
                held[problem.meter] = "; ".join(filter(None, [held.get(problem.meter), problem.line()]))
        self._held, self._ids = held, {name: meter["id"] for name, meter in found.items()}
        self._checked_at = time.monotonic()

    def held(self) -> dict[str, str]:
        """Event name → the problems that make posting to it bill the wrong amount."""
        with self._lock:
            self._refresh()
            return dict(self._held)

    def meter_ids(self) -> dict[str, str]:
        with self._lock:
            self._refresh()
            return dict(self._ids)

    def forget(self) -> None:
        with self._lock:
            self._checked_at = float("-inf")
