"""Metered billing: the billed amount per meter, the outbox (sealed entries and their status), the
relay that posts them to the sink, reconciliation with Stripe, Stripe's webhooks, and every Stripe
call (``stripe_api``)."""

from billingproxy.billing.meters import MICRO, Meter, carry, measure
from billingproxy.billing.outbox import Entry, OutboxStatus, closed_before, identifier, plan_entries, seal
from billingproxy.billing.reconcile import Difference, Reconciler
from billingproxy.billing.relay import Relay, RelayStats
from billingproxy.billing.sinks import (
    LagoSink,
    PermanentSinkError,
    Sink,
    SinkError,
    StripeSink,
    TransientSinkError,
    WebhookSink,
    make_sink,
)
from billingproxy.billing.stripe_api import StripeApi, stripe_client
from billingproxy.metering import WindowDelta

__all__ = [
    "MICRO",
    "Difference",
    "Entry",
    "LagoSink",
    "Meter",
    "OutboxStatus",
    "PermanentSinkError",
    "Reconciler",
    "Relay",
    "RelayStats",
    "Sink",
    "SinkError",
    "StripeApi",
    "StripeSink",
    "TransientSinkError",
    "WebhookSink",
    "WindowDelta",
    "carry",
    "closed_before",
    "identifier",
    "make_sink",
    "measure",
    "plan_entries",
    "seal",
    "stripe_client",
]
