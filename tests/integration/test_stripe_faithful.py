"""Issue 18's scenarios through the real relay, reconciler and webhook endpoint, against the
faithful fake Stripe, as filed (written against the fake before the fixes; they passed once the
billing code was fixed). More of them, with the details, in test_stripe_fidelity.py.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from billingproxy import db
from billingproxy.billing import Reconciler, stripe_client
from billingproxy.config import BillingSettings
from billingproxy.service import create_app
from billingproxy.tenants import TenantStore
from testkit.billing import (
    COST_METER,
    drain,
    expected_micro_usd,
    make_relay,
    outbox_counts,
    relay_settings,
    store_usage,
    usage_records,
)
from testkit.fakes.stripe_api import EVENT_DESTINATION_SECRET, WEBHOOK_SECRET, FakeStripe, deliver
from testkit.support import MASTER_KEY, wait_until

HOUR = 3600


def tenant(database_url: str, customer: str | None = None):
    customer = customer or f"cus_{uuid.uuid4().hex[:14]}"
    with db.connect(database_url) as conn:
        return TenantStore(conn).create_tenant(f"faithful-{uuid.uuid4().hex[:8]}", stripe_customer_id=customer)


def assert_stripe_matches(fake: FakeStripe, database_url: str, tenant_obj) -> None:
    with db.connect(database_url) as conn:
        expected = expected_micro_usd(conn, tenant_obj.id, tenant_obj.price_multiplier)
    assert expected > 0
    assert fake.totals(COST_METER).get(tenant_obj.stripe_customer_id, 0) == expected
    assert fake.duplicate_identifiers == 0 and not fake.identifiers_accepted_twice()


def service_settings(fake: FakeStripe) -> BillingSettings:
    """The webhook secret, and the event destination's own secret once the settings have it."""
    settings = relay_settings(fake)
    names = {f.name for f in dataclasses.fields(BillingSettings)}
    if "event_destination_secret" in names:
        settings = dataclasses.replace(settings, event_destination_secret=EVENT_DESTINATION_SECRET)
    return settings


@pytest.fixture
def service(billing_db: str, fake_stripe: FakeStripe) -> Iterator[TestClient]:
    with TestClient(create_app(billing_db, MASTER_KEY, service_settings(fake_stripe))) as client:
        yield client


def endpoint(client: TestClient):
    return lambda body, headers: client.post("/stripe/webhook", content=body, headers=headers)


def test_lost_reply_retry_of_an_entry_older_than_35_days(billing_db: str, fake_stripe: FakeStripe) -> None:
    t = tenant(billing_db)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=36)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=3, start=start))
    fake_stripe.faults.extend(["drop"])  # Stripe bills it, the relay never hears back
    relay = make_relay(billing_db, fake_stripe, relay_tries=1)
    relay.run_once()
    first_second = int(time.time())
    wait_until(lambda: int(time.time()) > first_second, timeout=3, what="the next second")  # a new "now"
    drain(relay, billing_db)
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"sent": 1}
    assert fake_stripe.idempotency_errors == 0
    assert_stripe_matches(fake_stripe, billing_db, t)


def test_lagging_summaries_and_fix_twice_right_after_a_relay_pass(billing_db: str, fake_stripe: FakeStripe) -> None:
    fake_stripe.summary_lag_s = 45
    t = tenant(billing_db)
    store_usage(billing_db, usage_records(t.id, windows=4, per_window=3))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    reconciler = Reconciler(billing_db, stripe_client(relay_settings(fake_stripe)))
    start, end = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)
    reconciler.run(start, end, fix=True)
    reconciler.run(start, end, fix=True)
    assert_stripe_matches(fake_stripe, billing_db, t)
    fake_stripe.advance(60)  # Stripe has caught up: nothing is missing, nothing is in excess
    assert reconciler.run(start, end) == []


def test_saved_500_is_settled_by_reconciliation(billing_db: str, fake_stripe: FakeStripe) -> None:
    fake_stripe.summary_lag_s = 0
    fake_stripe.add_meter(COST_METER)
    t = tenant(billing_db)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=3))
    fake_stripe.faults.extend(["500_saved"])
    relay = make_relay(billing_db, fake_stripe)
    reconciler = Reconciler(billing_db, stripe_client(relay_settings(fake_stripe)))

    def settled() -> bool:
        relay.run_once()
        reconciler.run(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), fix=True, settle=timedelta(0))
        with db.connect(billing_db) as conn:
            counts = outbox_counts(conn)
        return not counts.get("pending") and not counts.get("failed")

    wait_until(settled, timeout=15, interval=0.3, what="the saved 500 to be settled")
    assert_stripe_matches(fake_stripe, billing_db, t)


def test_out_of_order_and_duplicated_subscription_events(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    t = tenant(billing_db)
    sub = fake_stripe.link_customer(t.stripe_customer_id, COST_METER)
    created = fake_stripe.subscription_event(sub["id"], "customer.subscription.created")
    fake_stripe.advance(5)
    fake_stripe.set_subscription_status(sub["id"], "canceled")
    deleted = fake_stripe.subscription_event(sub["id"], "customer.subscription.deleted")
    responses = deliver(endpoint(service), [created, deleted], WEBHOOK_SECRET, duplicates=2, order="reverse")
    assert [r.status_code for r in responses] == [200] * 4
    with db.connect(billing_db) as conn:
        assert TenantStore(conn).get_tenant(t.id).status == "suspended"


def test_thin_event_and_ping_signed_with_the_event_destination_secret(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    fake_stripe.auto_customers = False  # the customer is unknown to Stripe: an async meter error
    t = tenant(billing_db)  # a customer id Stripe does not know
    fake_stripe.add_meter(COST_METER)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=2))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    notifications = [fake_stripe.ping_event(), *fake_stripe.meter_error_reports()]
    responses = deliver(endpoint(service), notifications, EVENT_DESTINATION_SECRET)
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 1}


def test_meter_error_report_marks_every_affected_entry(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    fake_stripe.auto_customers = False
    fake_stripe.add_meter(COST_METER)
    t = tenant(billing_db)  # a customer id Stripe does not know
    store_usage(billing_db, usage_records(t.id, windows=5, per_window=1))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    (report,) = fake_stripe.meter_error_reports()
    (error_type,) = fake_stripe.v2_events[report["id"]]["data"]["reason"]["error_types"]
    assert error_type["error_count"] == 5 and len(error_type["sample_errors"]) == 2
    # Signed with the snapshot secret, so this test is about the samples only (see the test above).
    (response,) = deliver(endpoint(service), [report], WEBHOOK_SECRET)
    assert response.status_code == 200
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 5}


def test_misconfigured_meter_is_held_back(billing_db: str, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_meter(COST_METER, formula="last")
    t = tenant(billing_db)
    fake_stripe.link_customer(t.stripe_customer_id, COST_METER)
    store_usage(billing_db, usage_records(t.id, windows=3, per_window=2))
    relay = make_relay(billing_db, fake_stripe)
    for _ in range(3):
        relay.run_once()
    assert not fake_stripe.events  # nothing posted to a meter that would bill the wrong amount
    with db.connect(billing_db) as conn:
        assert "sent" not in outbox_counts(conn)


def test_late_usage_after_invoice_finalization_is_invoiced_somewhere(billing_db: str, fake_stripe: FakeStripe) -> None:
    now = time.time()
    anchor = int(now) // HOUR * HOUR - 3 * HOUR  # hourly billing periods; the first is final
    t = tenant(billing_db)
    fake_stripe.link_customer(t.stripe_customer_id, COST_METER, period_start=anchor, period_s=HOUR)
    start = datetime.fromtimestamp(anchor + 600, UTC)
    store_usage(billing_db, usage_records(t.id, windows=2, per_window=3, start=start))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    assert_stripe_matches(fake_stripe, billing_db, t)  # Stripe accepted and counts it ...
    fake_stripe.advance(3 * HOUR)  # every period it could be in has been invoiced and finalized
    assert fake_stripe.uninvoiced(t.stripe_customer_id) == []  # ... and some invoice bills it
    with db.connect(billing_db) as conn:
        expected = expected_micro_usd(conn, t.id, t.price_multiplier)
    invoiced = fake_stripe.invoiced(t.stripe_customer_id)
    assert sum(q.get(COST_METER, 0) for q in invoiced.values()) == expected
