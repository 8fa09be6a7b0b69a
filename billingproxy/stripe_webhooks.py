"""Stripe webhooks: verified on the raw body, handled once per event id.

Subscription state drives tenant state (the proxy's auth cache picks the change up within its
TTL); a meter error report marks the outbox entries Stripe refused as failed, so reconciliation
can settle them. The dedupe row and the change commit in one transaction: a handler that fails
leaves no dedupe row, and Stripe's redelivery is processed again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe

from billingproxy.settings import BillingSettings

log = logging.getLogger("billingproxy.stripe_webhooks")

SUSPENDING = {"customer.subscription.deleted", "customer.subscription.paused"}
RESUMING = {"customer.subscription.resumed", "customer.subscription.created", "customer.subscription.updated"}
LIVE_STATUSES = {"active", "trialing"}
DEAD_STATUSES = {"canceled", "unpaid", "paused", "incomplete_expired"}
METER_ERROR = "v1.billing.meter.error_report_triggered"


class BadWebhook(ValueError):
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
        raise RuntimeError("STRIPE_WEBHOOK_SECRET is not set")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature or "", settings.webhook_secret, settings.webhook_tolerance_s
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise BadWebhook(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadWebhook("not a Stripe event")
    return event


def handle(
    conn: psycopg.Connection, event: dict[str, Any], settings: BillingSettings, client: stripe.StripeClient | None
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
        action = _apply(conn, event, settings, client)
    log.info("stripe webhook", extra={"event_id": event_id, "event_type": kind, "action": action})
    return Outcome(event_id, kind, False, action)


def _apply(
    conn: psycopg.Connection, event: dict[str, Any], settings: BillingSettings, client: stripe.StripeClient | None
) -> str:
    kind = event["type"]
    if kind == METER_ERROR:
        return _meter_errors(conn, event, client)
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
    updated = conn.execute(
        """UPDATE tenants SET status = %s, updated_at = now()
           WHERE stripe_customer_id = %s AND status <> %s RETURNING id""",
        (status, customer, status),
    ).fetchall()
    if updated:
        log.warning("tenant status changed by Stripe", extra={"tenant_id": updated[0]["id"], "status": status})
    return f"{status}:{len(updated)}"


def _meter_errors(conn: psycopg.Connection, event: dict[str, Any], client: stripe.StripeClient | None) -> str:
    """A thin v2 event: its data (the refused requests' idempotency keys) is fetched from Stripe."""
    data = event.get("data")
    if data is None:
        if client is None:
            raise RuntimeError("STRIPE_API_KEY is needed to fetch meter error reports")
        data = client.v2.core.events.retrieve(event["id"]).to_dict().get("data") or {}
    failures: dict[str, str] = {}
    for error_type in (data.get("reason") or {}).get("error_types") or []:
        for sample in error_type.get("sample_errors") or []:
            identifier = (sample.get("request") or {}).get("identifier")
            if identifier:
                failures[identifier] = f"{error_type.get('code')}: {sample.get('error_message', '')}"[:500]
    for identifier, error in failures.items():
        conn.execute(
            """UPDATE billing_outbox SET status = 'failed', last_error = %s
               WHERE identifier = %s AND status <> 'cancelled'""",
            (error, identifier),
        )
    log.error("Stripe refused meter events", extra={"identifiers": sorted(failures), "event_id": event["id"]})
    return f"failed:{len(failures)}"
