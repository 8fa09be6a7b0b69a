"""Where outbox entries go: Stripe Billing Meters (default), Lago's batch events API, or any
billing system behind a signed (HMAC-SHA256) webhook.

A sink posts a list of entries (up to its ``max_batch``) all or nothing and raises
``TransientSinkError`` (retry later: 429, 5xx, timeouts, dropped connections),
``PermanentSinkError`` (the request itself is wrong; retrying will not help) or
``UnsettledSinkError`` (Stripe answers the key with a saved error: resending the same request
achieves nothing, reconciliation settles the entry). Every post is idempotent on the entries'
identifiers, so a retry after an unknown outcome never double-bills. Before an entry's first try
``prepare`` may hold it (its meter is misconfigured) or place it in the open billing period (its
own period's invoice is already final).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import stripe

from billingproxy.billing.check import LIVE_SUBSCRIPTIONS, MeterCheck
from billingproxy.billing.outbox import Entry
from billingproxy.billing.stripe_api import StripeApi, stripe_client
from billingproxy.config import BillingSettings
from billingproxy.errors import BillingProxyError, ConfigError

__all__ = [
    "LagoSink",
    "PermanentSinkError",
    "Preparation",
    "Sink",
    "SinkError",
    "StripeSink",
    "TransientSinkError",
    "UnsettledSinkError",
    "WebhookSink",
    "make_sink",
    "stripe_client",
    "webhook_signature",
]


class SinkError(BillingProxyError):
    """The billing sink did not take the entries."""


class TransientSinkError(SinkError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentSinkError(SinkError):
    """The request itself is wrong; retrying will not help."""


class UnsettledSinkError(SinkError):
    """The sink answers this request with a saved error (Stripe replays the first response for an
    idempotency key for ~24 h, a 500 included), or refuses the key because a first try with other
    parameters went out: resending cannot help. Whether Stripe holds the event is for
    reconciliation to tell, from its summaries."""


@dataclass
class Preparation:
    """What to do with entries before their first try."""

    held: dict[str, str] = field(default_factory=dict)  # identifier → why it must not be posted now
    placed: dict[str, int] = field(default_factory=dict)  # identifier → timestamp in the open period


class Sink(Protocol):
    name: str
    max_batch: int
    customer_required: bool

    def post(self, entries: Sequence[Entry]) -> None: ...

    def prepare(self, customer: str, entries: Sequence[Entry], untried: set[str]) -> Preparation: ...


def _retry_after(error: stripe.StripeError) -> float | None:
    value = (error.headers or {}).get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _header(error: stripe.StripeError, name: str) -> str | None:
    headers = error.headers or {}
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _no_preparation(customer: str, entries: Sequence[Entry], untried: set[str]) -> Preparation:
    return Preparation()


class _TtlCache:
    """A few Stripe reads shared by the entries of one relay pass (seconds, not minutes)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._values.get(key)
            if hit and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
        value = load()
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value


class StripeSink:
    """v1 meter events, one event per call, the identifier also the idempotency key."""

    name = "stripe"
    max_batch = 1
    customer_required = True

    def __init__(self, client: stripe.StripeClient, meters: Sequence[Any] = (), check_ttl_s: float = 300.0) -> None:
        self.api = StripeApi(client)
        self.meter_check = MeterCheck(self.api, meters, check_ttl_s)
        self._reads = _TtlCache(30.0)

    def post(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self._post_one(entry)

    def _post_one(self, entry: Entry) -> None:
        try:
            self.api.create_meter_event(
                entry.meter, entry.customer_id, entry.value, entry.identifier, entry.event_timestamp
            )
        except (stripe.RateLimitError, stripe.APIConnectionError) as exc:
            raise TransientSinkError(
                f"stripe: {type(exc).__name__}: {exc.user_message or exc}", _retry_after(exc)
            ) from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            message = f"stripe: HTTP {status}: {exc.user_message or exc}"
            if exc.code == "duplicate_meter_event":
                return  # Stripe already holds an event with this identifier: it is delivered
            if _header(exc, "Idempotent-Replayed") == "true" and status >= 500:
                # docs.stripe.com/api/idempotent_requests: the saved 500 is replayed for this key.
                raise UnsettledSinkError(f"{message} (a saved error replayed for this key)") from exc
            if isinstance(exc, stripe.IdempotencyError) and status == 400:
                raise UnsettledSinkError(message) from exc
            # 409: the same idempotency key is still being processed by an earlier try.
            if status >= 500 or status in (409, 429) or status == 0:
                raise TransientSinkError(message, _retry_after(exc)) from exc
            raise PermanentSinkError(message) from exc

    # ---- before the first try ---------------------------------------------------------------

    def prepare(self, customer: str, entries: Sequence[Entry], untried: set[str]) -> Preparation:
        """Hold the entries of a misconfigured meter (``stripe check``, cached); place never-tried
        entries whose billing period's invoice is already final into the open period. Raises
        ``TransientSinkError`` when Stripe cannot be asked (the entries wait for a later pass)."""
        try:
            return self._prepare(customer, entries, untried)
        except stripe.StripeError as exc:
            raise TransientSinkError(f"stripe: checking the account: {exc.user_message or exc}") from exc

    def _prepare(self, customer: str, entries: Sequence[Entry], untried: set[str]) -> Preparation:
        held_meters = self.meter_check.held()
        result = Preparation()
        for entry in entries:
            if entry.meter in held_meters:
                result.held[entry.identifier] = held_meters[entry.meter]
        fresh = [e for e in entries if e.identifier in untried and e.identifier not in result.held]
        if fresh:
            now = int(time.time())
            for entry in fresh:
                if self._period_is_invoiced(entry, now):
                    result.placed[entry.identifier] = now
        return result

    def _period_is_invoiced(self, entry: Entry, now: int) -> bool:
        """True when no invoice will ever bill the entry's timestamp: its period's invoice is
        finalized (or the timestamp is before the subscription began)."""
        meter_id = self.meter_check.meter_ids().get(entry.meter)
        subs = self._reads.get(("subs", entry.customer_id), lambda: self.api.subscriptions(entry.customer_id))
        ts = entry.event_timestamp
        for sub in subs:
            if sub.get("status") not in LIVE_SUBSCRIPTIONS:
                continue
            for item in (sub.get("items") or {}).get("data") or []:
                if ((item.get("price") or {}).get("recurring") or {}).get("meter") != meter_id:
                    continue
                period_start = item.get("current_period_start") or sub.get("current_period_start") or 0
                if ts >= period_start:
                    return False  # the open period: its invoice is not final
                if ts < (sub.get("start_date") or sub.get("created") or 0):
                    return True
                sub_id = sub["id"]
                invoice = self._reads.get(
                    ("invoice", sub_id, ts // 60),
                    lambda: self.api.invoice_for(sub_id, ts),  # noqa: B023 - used at once
                )
                return invoice is not None and invoice.get("status") != "draft"
        return False  # no subscription bills this meter: `stripe check` reports it


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

    prepare = staticmethod(_no_preparation)


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

    prepare = staticmethod(_no_preparation)


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
    return StripeSink(stripe_client(settings), settings.meters)
