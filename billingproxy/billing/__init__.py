"""Metered billing: the billed amount per meter, the outbox (sealed entries and their status), the
relay that posts them to the sink, reconciliation with Stripe, Stripe's webhooks, and every Stripe
call (``stripe_api``)."""

from billingproxy.billing.check import MeterCheck, Problem, check_account
from billingproxy.billing.meters import MICRO, Meter, carry, measure
from billingproxy.billing.outbox import (
    STRIPE_MAX_AGE,
    Entry,
    OutboxStatus,
    closed_before,
    event_timestamp,
    identifier,
    late_entries,
    plan_entries,
    seal,
)
from billingproxy.billing.reconcile import Difference, Reconciler
from billingproxy.billing.relay import Relay, RelayStats
from billingproxy.billing.sinks import (
    LagoSink,
    PermanentSinkError,
    Sink,
    SinkError,
    StripeSink,
    TransientSinkError,
    UnsettledSinkError,
    WebhookSink,
    make_sink,
)
from billingproxy.billing.stripe_api import StripeApi, stripe_client
from billingproxy.metering import WindowDelta

__all__ = [
    "MICRO",
    "STRIPE_MAX_AGE",
    "Difference",
    "Entry",
    "LagoSink",
    "Meter",
    "MeterCheck",
    "OutboxStatus",
    "PermanentSinkError",
    "Problem",
    "Reconciler",
    "Relay",
    "RelayStats",
    "Sink",
    "SinkError",
    "StripeApi",
    "StripeSink",
    "TransientSinkError",
    "UnsettledSinkError",
    "WebhookSink",
    "WindowDelta",
    "carry",
    "check_account",
    "closed_before",
    "event_timestamp",
    "identifier",
    "late_entries",
    "make_sink",
    "measure",
    "plan_entries",
    "seal",
    "stripe_client",
]
