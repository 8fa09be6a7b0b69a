"""Where outbox entries go: Stripe Billing Meters (default), Lago's batch events API, or any
billing system behind a signed (HMAC-SHA256) webhook.

A sink posts a list of entries (up to its ``max_batch``) all or nothing and raises
``TransientSinkError`` (retry later: 429, 5xx, timeouts, dropped connections) or
``PermanentSinkError`` (the request itself is wrong; retrying will not help). Every post is
idempotent on the entries' identifiers, so a retry after an unknown outcome never double-bills.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx
import stripe

from billingproxy.billing.outbox import Entry
from billingproxy.billing.stripe_api import StripeApi, stripe_client
from billingproxy.config import BillingSettings
from billingproxy.errors import BillingProxyError, ConfigError

__all__ = [
    "LagoSink",
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "StripeSink",
    "TransientSinkError",
    "WebhookSink",
    "make_sink",
    "stripe_client",
    "webhook_signature",
]

# Stripe takes meter events up to 35 days old; a backlog older than that is reported at the
# oldest timestamp Stripe still takes (it then lands in the current billing period).
STRIPE_MAX_AGE = timedelta(days=35) - timedelta(hours=1)


class SinkError(BillingProxyError):
    """The billing sink did not take the entries."""


class TransientSinkError(SinkError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentSinkError(SinkError):
    """The request itself is wrong; retrying will not help."""


class Sink(Protocol):
    name: str
    max_batch: int
    customer_required: bool

    def post(self, entries: Sequence[Entry]) -> None: ...


def event_timestamp(entry: Entry, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    return int(max(entry.window_start, now - STRIPE_MAX_AGE).timestamp())


def _retry_after(error: stripe.StripeError) -> float | None:
    value = (error.headers or {}).get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class StripeSink:
    """v1 meter events, one event per call, the identifier also the idempotency key."""

    name = "stripe"
    max_batch = 1
    customer_required = True

    def __init__(self, client: stripe.StripeClient) -> None:
        self.api = StripeApi(client)

    def post(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self._post_one(entry)

    def _post_one(self, entry: Entry) -> None:
        try:
            self.api.create_meter_event(
                entry.meter, entry.customer_id, entry.value, entry.identifier, event_timestamp(entry)
            )
        except (stripe.RateLimitError, stripe.APIConnectionError) as exc:
            raise TransientSinkError(
                f"stripe: {type(exc).__name__}: {exc.user_message or exc}", _retry_after(exc)
            ) from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            # 409: the same idempotency key is still being processed by an earlier try.
            if status >= 500 or status in (409, 429) or status == 0:
                raise TransientSinkError(
                    f"stripe: HTTP {status}: {exc.user_message or exc}", _retry_after(exc)
                ) from exc
            raise PermanentSinkError(f"stripe: HTTP {status}: {exc.user_message or exc}") from exc


def _post_json(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], sink: str) -> None:
    try:
        response = client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    except httpx.HTTPError as exc:
        raise TransientSinkError(f"{sink}: {type(exc).__name__}: {exc}") from exc
    if response.status_code < 300:
        return
    detail = f"{sink}: HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code >= 500 or response.status_code in (408, 409, 429):
        retry = response.headers.get("Retry-After")
        raise TransientSinkError(detail, float(retry) if retry and retry.isdigit() else None)
    raise PermanentSinkError(detail)


class LagoSink:
    """Lago's batch events API; ``transaction_id`` (Lago's dedup key) is the identifier."""

    name = "lago"
    max_batch = 100  # Lago's batch limit
    customer_required = False  # the tenant id is the external subscription id by default

    def __init__(self, api_url: str, api_key: str, timeout_s: float = 20.0) -> None:
        self.url = api_url.rstrip("/") + "/api/v1/events/batch"
        self.client = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})

    def post(self, entries: Sequence[Entry]) -> None:
        events = [
            {
                "transaction_id": e.identifier,
                "external_subscription_id": e.customer_id,
                "code": e.meter,
                "timestamp": int(e.window_start.timestamp()),
                "properties": {"value": e.value},
            }
            for e in entries
        ]
        _post_json(self.client, self.url, json.dumps({"events": events}).encode(), {}, self.name)


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=…,v1=…``: HMAC-SHA256 over ``"{t}." + body``, the scheme Stripe uses for its own."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSink:
    """POSTs JSON batches to any URL, signed in ``X-BillingProxy-Signature``.

    Receivers verify the signature and dedupe on each event's ``identifier``.
    """

    name = "webhook"
    max_batch = 100
    customer_required = False

    def __init__(self, url: str, secret: str, timeout_s: float = 20.0) -> None:
        self.url = url
        self.secret = secret
        self.client = httpx.Client(timeout=timeout_s)

    def post(self, entries: Sequence[Entry]) -> None:
        events = [
            {
                "identifier": e.identifier,
                "tenant_id": e.tenant_id,
                "customer_id": e.customer_id,
                "meter": e.meter,
                "timestamp": int(e.window_start.timestamp()),
                "value": e.value,
            }
            for e in entries
        ]
        body = json.dumps({"events": events}).encode()
        headers = {"X-BillingProxy-Signature": webhook_signature(self.secret, int(time.time()), body)}
        _post_json(self.client, self.url, body, headers, self.name)


def make_sink(settings: BillingSettings) -> Sink:
    if settings.sink == "lago":
        if not (settings.lago_api_url and settings.lago_api_key):
            raise ConfigError("the lago sink needs LAGO_API_URL and LAGO_API_KEY")
        return LagoSink(settings.lago_api_url, settings.lago_api_key)
    if settings.sink == "webhook":
        if not (settings.sink_webhook_url and settings.sink_webhook_secret):
            raise ConfigError(
                "the webhook sink needs BILLINGPROXY_SINK_WEBHOOK_URL and BILLINGPROXY_SINK_WEBHOOK_SECRET"
            )
        return WebhookSink(settings.sink_webhook_url, settings.sink_webhook_secret)
    return StripeSink(stripe_client(settings))
