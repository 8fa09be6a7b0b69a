"""Every call BillingProxy makes to Stripe, through the official SDK, in one place.

The client is built without SDK retries: the relay retries itself (the SDK does not retry a
plain 429) and counts its tries. ``STRIPE_API_BASE`` points the SDK at a local fake in tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from billingproxy.config import BillingSettings
from billingproxy.errors import ConfigError, NotFound

__all__ = [
    "CUSTOMER_KEY",
    "VALUE_KEY",
    "StripeApi",
    "ThinEvent",
    "parse_thin_event",
    "stripe_client",
    "verify_signature",
]

# The payload keys every meter event we send carries; a meter must map exactly these
# (``customer_mapping.event_payload_key``, ``value_settings.event_payload_key``).
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"


def stripe_client(settings: BillingSettings) -> stripe.StripeClient:
    if not settings.stripe_api_key:
        raise ConfigError("STRIPE_API_KEY is not set")
    addresses = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=addresses,  # type: ignore[arg-type]
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_s),
    )


def verify_signature(payload: str, signature: str, secret: str, tolerance_s: int) -> None:
    """Raises ``stripe.SignatureVerificationError`` unless the webhook signature is valid and fresh."""
    stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance_s)


@dataclass(frozen=True)
class ThinEvent:
    """A thin (v2) event notification: no data, only what happened to which object."""

    id: str
    type: str
    created: str
    related_object: dict[str, Any] | None


def parse_thin_event(payload: str, signature: str, secret: str, tolerance_s: int) -> ThinEvent:
    """An event destination's thin notification, verified with that destination's own secret
    through the SDK's thin-event API (``StripeClient.parse_event_notification``, stripe-python
    16.1). Raises ``stripe.SignatureVerificationError``; no API key is needed to parse."""
    parser = stripe.StripeClient("sk_parse_only")  # parsing only: it makes no request
    notification = parser.parse_event_notification(payload, signature, secret, tolerance_s)
    related = getattr(notification, "related_object", None)
    related_dict = {"id": related.id, "type": related.type, "url": related.url} if related is not None else None
    return ThinEvent(notification.id, notification.type, str(notification.created), related_dict)


class StripeApi:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client
        self._meter_ids: dict[str, str] | None = None

    def create_meter_event(
        self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int
    ) -> None:
        """One v1 meter event; the identifier is also the idempotency key."""
        self.client.v1.billing.meter_events.create(
            params={
                "event_name": event_name,
                "payload": {CUSTOMER_KEY: customer_id, VALUE_KEY: str(value)},
                "identifier": identifier,
                "timestamp": timestamp,
            },
            options={"idempotency_key": identifier},
        )

    def cancel_meter_event(self, event_name: str, identifier: str) -> None:
        """A meter event adjustment cancelling one of our events (Stripe allows it within 24 h)."""
        self.client.v1.billing.meter_event_adjustments.create(
            params={"event_name": event_name, "type": "cancel", "cancel": {"identifier": identifier}}
        )

    def meter_id(self, event_name: str) -> str:
        if self._meter_ids is None:
            meters = self.client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter()
            self._meter_ids = {meter.event_name: meter.id for meter in meters}
        if event_name not in self._meter_ids:
            raise NotFound(f"Stripe has no meter for event name {event_name!r}")
        return self._meter_ids[event_name]

    def hourly_summaries(
        self, event_name: str, customer: str, start: datetime, end: datetime
    ) -> Iterator[tuple[datetime, int]]:
        """Stripe's hourly totals (hour start, aggregated value) for one customer and meter."""
        summaries = self.client.v1.billing.meters.event_summaries.list(
            self.meter_id(event_name),
            params={
                "customer": customer,
                "start_time": int(start.timestamp()),
                "end_time": int(end.timestamp()),
                "value_grouping_window": "hour",
                "limit": 100,
            },
        ).auto_paging_iter()
        for summary in summaries:
            yield datetime.fromtimestamp(summary.start_time, UTC), int(Decimal(str(summary.aggregated_value)))

    def event_data(self, event_id: str) -> dict[str, Any]:
        """A thin (v2) event's data, fetched from Stripe."""
        return self.client.v2.core.events.retrieve(event_id).to_dict().get("data") or {}

    # ---- the account's configuration (``stripe check``, the relay's hold and late checks) ----

    def meters(self) -> list[dict[str, Any]]:
        """Every meter of the account, active or not."""
        meters = self.client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter()
        return [meter.to_dict() for meter in meters]

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer, or None when Stripe has no such customer (a deleted one is a stub)."""
        try:
            return self.client.v1.customers.retrieve(customer_id).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise

    def subscriptions(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's subscriptions that are not canceled, items and prices included
        (since API 2025-03-31.basil each item carries its ``current_period_start/end``)."""
        subs = self.client.v1.subscriptions.list(params={"customer": customer_id, "limit": 100})
        return [sub.to_dict() for sub in subs.auto_paging_iter()]

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self.client.v1.subscriptions.retrieve(subscription_id).to_dict()

    def invoice_for(self, subscription_id: str, timestamp: int) -> dict[str, Any] | None:
        """The subscription's invoice whose usage period holds ``timestamp`` (newest first)."""
        invoices = self.client.v1.invoices.list(params={"subscription": subscription_id, "limit": 100})
        for invoice in invoices.auto_paging_iter():
            if invoice.period_start <= timestamp < invoice.period_end:
                return invoice.to_dict()
            if invoice.period_end <= timestamp:
                return None  # listed newest first: older ones cannot hold it
        return None
