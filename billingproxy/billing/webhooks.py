"""Stripe webhooks: verified on the raw body, handled once per event id.

Subscription state drives tenant state (through ``billingproxy.tenants``; the proxy's auth cache
picks the change up within its TTL); a meter error report marks the outbox entries Stripe refused
as failed (through ``billingproxy.billing.outbox``), so reconciliation can settle them. The only
module that writes ``stripe_webhook_events``. The dedupe row and the change commit in one
transaction: a handler that fails leaves no dedupe row, and Stripe's redelivery is processed again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe

from billingproxy.billing import outbox
from billingproxy.billing.stripe_api import StripeApi, verify_signature
from billingproxy.config import BillingSettings
from billingproxy.errors import ConfigError, InvalidInput
from billingproxy.tenants import set_status_for_customer

__all__ = ["METER_ERROR", "BadWebhook", "Outcome", "handle", "verify"]

log = logging.getLogger("billingproxy.stripe_webhooks")

SUSPENDING = {"customer.subscription.deleted", "customer.subscription.paused"}
RESUMING = {"customer.subscription.resumed", "customer.subscription.created", "customer.subscription.updated"}
LIVE_STATUSES = {"active", "trialing"}
DEAD_STATUSES = {"canceled", "unpaid", "paused", "incomplete_expired"}
METER_ERROR = "v1.billing.meter.error_report_triggered"


class BadWebhook(InvalidInput):
    """Signature, timestamp or payload rejected: answer 400."""


@dataclass(frozen=True)
class Outcome:
    event_id: str
    type: str
    duplicate: bool
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.event_id, "type": self.type, "duplicate": self.duplicate, "action": self.action}


def verify(payload: bytes, signature: str | None, settings: BillingSettings) -> dict[str, Any]:
    """The event as a dict, after checking the signature and its timestamp's age."""
    if not settings.webhook_secret:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set")
    try:
        verify_signature(
            payload.decode("utf-8"), signature or "", settings.webhook_secret, settings.webhook_tolerance_s
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise BadWebhook(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadWebhook("not a Stripe event")
    return event


def handle(
    conn: psycopg.Connection, event: dict[str, Any], settings: BillingSettings, api: StripeApi | None
) -> Outcome:
    event_id, kind = event["id"], event["type"]
    with conn.transaction():
        first = conn.execute(
            """INSERT INTO stripe_webhook_events (event_id, type) VALUES (%s, %s)
               ON CONFLICT DO NOTHING RETURNING event_id""",
            (event_id, kind),
        ).fetchone()
        if first is None:
            return Outcome(event_id, kind, True, "duplicate")
        action = _apply(conn, event, settings, api)
    log.info("stripe webhook", extra={"event_id": event_id, "event_type": kind, "action": action})
    return Outcome(event_id, kind, False, action)


def _apply(conn: psycopg.Connection, event: dict[str, Any], settings: BillingSettings, api: StripeApi | None) -> str:
    kind = event["type"]
    if kind == METER_ERROR:
        return _meter_errors(conn, event, api)
    obj = (event.get("data") or {}).get("object") or {}
    customer = obj.get("customer")
    if not isinstance(customer, str):
        return "ignored"
    if kind in SUSPENDING or (kind in RESUMING and obj.get("status") in DEAD_STATUSES):
        return _set_status(conn, customer, "suspended")
    if kind in RESUMING and obj.get("status") in LIVE_STATUSES:
        return _set_status(conn, customer, "active")
    if kind == "invoice.payment_failed" and settings.suspend_on_payment_failure:
        return _set_status(conn, customer, "suspended")
    return "ignored"


def _set_status(conn: psycopg.Connection, customer: str, status: str) -> str:
    updated = set_status_for_customer(conn, customer, status)
    if updated:
        log.warning("tenant status changed by Stripe", extra={"tenant_id": updated[0], "status": status})
    return f"{status}:{len(updated)}"


def _meter_errors(conn: psycopg.Connection, event: dict[str, Any], api: StripeApi | None) -> str:
    """A thin v2 event: its data (the refused requests' idempotency keys) is fetched from Stripe."""
    data = event.get("data")
    if data is None:
        if api is None:
            raise ConfigError("STRIPE_API_KEY is needed to fetch meter error reports")
        data = api.event_data(event["id"])
    failures: dict[str, str] = {}
    for error_type in (data.get("reason") or {}).get("error_types") or []:
        for sample in error_type.get("sample_errors") or []:
            identifier = (sample.get("request") or {}).get("identifier")
            if identifier:
                failures[identifier] = f"{error_type.get('code')}: {sample.get('error_message', '')}"[:500]
    for identifier, error in failures.items():
        outbox.mark_refused_by_sink(conn, identifier, error)
    log.error("Stripe refused meter events", extra={"identifiers": sorted(failures), "event_id": event["id"]})
    return f"failed:{len(failures)}"
