"""Stripe webhooks: verified on the raw body, handled once per event id, in order per subscription.

One endpoint takes both kinds of delivery: snapshot events from a webhook endpoint (signed with
``STRIPE_WEBHOOK_SECRET``) and thin events from an event destination (signed with its own
``STRIPE_EVENT_DESTINATION_SECRET``, parsed with the SDK's thin-event API; the destination's test
ping is answered 200).

Subscription state drives tenant state (through ``billingproxy.tenants``; the proxy's auth cache
picks the change up within its TTL). Stripe delivers at least once and in no guaranteed order, so
the last applied state per subscription is kept (``stripe_subscriptions``): an event older than
it is ignored, a tie (same second) is settled by re-reading the subscription from Stripe, and a
canceled subscription stays canceled (Stripe cannot revive one). A meter error report marks every
outbox entry of its meter tried while Stripe validated the refused events as failed (the report
names samples only), through ``billingproxy.billing.outbox``; reconciliation then settles them.
The only module that writes ``stripe_webhook_events`` and ``stripe_subscriptions``. The dedupe row
and the change commit in one transaction: a handler that fails leaves no dedupe row, and Stripe's
redelivery is processed again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import stripe

from billingproxy.billing import outbox
from billingproxy.billing.stripe_api import StripeApi, parse_thin_event, verify_signature
from billingproxy.config import BillingSettings
from billingproxy.errors import ConfigError, InvalidInput
from billingproxy.tenants import set_status_for_customer

__all__ = ["METER_ERROR", "PING", "BadWebhook", "Outcome", "handle", "verify"]

log = logging.getLogger("billingproxy.stripe_webhooks")

SUSPENDING = {"customer.subscription.deleted", "customer.subscription.paused"}
RESUMING = {"customer.subscription.resumed", "customer.subscription.created", "customer.subscription.updated"}
LIVE_STATUSES = {"active", "trialing"}
DEAD_STATUSES = {"canceled", "unpaid", "paused", "incomplete_expired"}
TERMINAL_STATUSES = {"canceled", "incomplete_expired"}  # docs.stripe.com/api/subscriptions/object
METER_ERROR = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"
PING = "v2.core.event_destination.ping"
# Our try is stamped before the call and Stripe validates shortly after it receives the event.
TRIED_BEFORE_VALIDATION = timedelta(minutes=5)


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


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def verify(payload: bytes, signature: str | None, settings: BillingSettings) -> dict[str, Any]:
    """The event as a dict, after checking the signature (with the webhook endpoint's secret, or
    the event destination's) and its timestamp's age. A thin event has no ``data``."""
    if not (settings.webhook_secret or settings.event_destination_secret):
        raise ConfigError("neither STRIPE_WEBHOOK_SECRET nor STRIPE_EVENT_DESTINATION_SECRET is set")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadWebhook(_reason(exc)) from exc
    failure: Exception | None = None
    if settings.webhook_secret:
        try:
            verify_signature(text, signature or "", settings.webhook_secret, settings.webhook_tolerance_s)
            event = json.loads(text)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            failure = exc
        else:
            if not isinstance(event, dict) or not isinstance(event.get("id"), str):
                raise BadWebhook("not a Stripe event")
            if not isinstance(event.get("type"), str):
                raise BadWebhook("not a Stripe event")
            return event
    if settings.event_destination_secret:
        try:
            thin = parse_thin_event(
                text, signature or "", settings.event_destination_secret, settings.webhook_tolerance_s
            )
        except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError) as exc:
            failure = failure if isinstance(exc, stripe.SignatureVerificationError) and failure else exc
        else:
            return {"id": thin.id, "type": thin.type, "created": thin.created, "related_object": thin.related_object}
    raise BadWebhook(_reason(failure) if failure else "not a Stripe event")


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
    if kind == PING:
        return "pong"
    if kind in (METER_ERROR, NO_METER):
        return _meter_errors(conn, event, api)
    obj = (event.get("data") or {}).get("object") or {}
    customer = obj.get("customer")
    if not isinstance(customer, str):
        return "ignored"
    if kind in SUSPENDING or kind in RESUMING:
        status = _in_order(conn, event, obj, api)
        if status is None:
            return "stale"
        if kind in SUSPENDING or status in DEAD_STATUSES:
            return _set_status(conn, customer, "suspended")
        if status in LIVE_STATUSES:
            return _set_status(conn, customer, "active")
        return "ignored"
    if kind == "invoice.payment_failed" and settings.suspend_on_payment_failure:
        return _set_status(conn, customer, "suspended")
    return "ignored"


def _in_order(
    conn: psycopg.Connection, event: dict[str, Any], obj: dict[str, Any], api: StripeApi | None
) -> str | None:
    """The subscription status to apply, or None when the event is older than the state applied."""
    sub_id, status, created = obj.get("id"), obj.get("status"), event.get("created")
    if not isinstance(sub_id, str) or not isinstance(created, int) or not isinstance(status, str):
        return status if isinstance(status, str) else ""
    if event["type"] == "customer.subscription.deleted":
        status = "canceled"
    applied = conn.execute(
        "SELECT status, event_created FROM stripe_subscriptions WHERE subscription_id = %s FOR UPDATE", (sub_id,)
    ).fetchone()
    if applied is not None:
        if applied["status"] in TERMINAL_STATUSES or created < applied["event_created"]:
            log.info("stale subscription event ignored", extra={"event_id": event["id"], "subscription": sub_id})
            return None
        if created == applied["event_created"] and api is not None and status != applied["status"]:
            status = api.subscription(sub_id).get("status") or status  # same second: ask Stripe
    conn.execute(
        """INSERT INTO stripe_subscriptions (subscription_id, customer_id, status, event_created, event_id)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (subscription_id) DO UPDATE SET customer_id = excluded.customer_id,
               status = excluded.status, event_created = excluded.event_created,
               event_id = excluded.event_id, updated_at = now()""",
        (sub_id, obj["customer"], status, created, event["id"]),
    )
    return status


def _set_status(conn: psycopg.Connection, customer: str, status: str) -> str:
    updated = set_status_for_customer(conn, customer, status)
    if updated:
        log.warning("tenant status changed by Stripe", extra={"tenant_id": updated[0], "status": status})
    return f"{status}:{len(updated)}"


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _meter_errors(conn: psycopg.Connection, event: dict[str, Any], api: StripeApi | None) -> str:
    """A thin v2 event: its data (error codes, samples, the validation time range) is fetched
    from Stripe; its related object is the meter."""
    data = event.get("data")
    if data is None:
        if api is None:
            raise ConfigError("STRIPE_API_KEY is needed to fetch meter error reports")
        data = api.event_data(event["id"])
    error_types = (data.get("reason") or {}).get("error_types") or []
    summary = "; ".join(f"{t.get('code')} x{t.get('error_count')}" for t in error_types)
    failures: dict[str, str] = {}
    for error_type in error_types:
        for sample in error_type.get("sample_errors") or []:
            identifier = (sample.get("request") or {}).get("identifier")
            if identifier:
                failures[identifier] = f"{error_type.get('code')}: {sample.get('error_message', '')}"[:500]
    marked = 0
    meter_id = (event.get("related_object") or {}).get("id")
    start, end = _when(data.get("validation_start")), _when(data.get("validation_end"))
    if meter_id and start and end and api is not None:
        names = [m["event_name"] for m in api.meters() if m.get("id") == meter_id]
        for name in names:
            marked += outbox.mark_meter_errors(
                conn, name, start - TRIED_BEFORE_VALIDATION, end, f"meter error report {event['id']}: {summary}"[:500]
            )
    for identifier, error in failures.items():  # the samples, with their own message
        marked += outbox.mark_refused_by_sink(conn, identifier, error)
    log.error(
        "Stripe refused meter events",
        extra={"samples": sorted(failures), "entries_marked": marked, "errors": summary, "event_id": event["id"]},
    )
    return f"failed:{marked}"
