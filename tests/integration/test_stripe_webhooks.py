"""POST /stripe/webhook on the billing service: signatures, dedupe, tenant state, meter errors."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient

from billingproxy import db
from billingproxy.service import create_app
from billingproxy.tenants import TenantStore
from testkit.billing import relay_settings
from testkit.fakes.stripe_api import FakeStripe
from testkit.support import MASTER_KEY, wait_until

SECRET = "whsec_test_secret"


def signed(event: dict, *, secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and header Stripe would send, signed with the SDK's own signing function."""
    payload = json.dumps(event)
    t = int(time.time()) if timestamp is None else timestamp
    signature = stripe.WebhookSignature._compute_signature(f"{t}.{payload}", secret)
    return payload.encode(), {"Stripe-Signature": f"t={t},v1={signature}", "Content-Type": "application/json"}


def subscription_event(kind: str, customer: str, status: str) -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": kind,
        "data": {
            "object": {
                "id": f"sub_{uuid.uuid4().hex[:10]}",
                "object": "subscription",
                "customer": customer,
                "status": status,
            }
        },
    }


@pytest.fixture
def service(database_url: str, fake_stripe: FakeStripe) -> Iterator[TestClient]:
    app = create_app(database_url, MASTER_KEY, relay_settings(fake_stripe))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def customer_tenant(database_url: str) -> tuple[str, str, str]:
    """(tenant id, Stripe customer, gateway token)."""
    customer = f"cus_{uuid.uuid4().hex[:14]}"
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"wh-{uuid.uuid4().hex[:8]}", stripe_customer_id=customer)
        _, token = store.create_key(tenant.id)
    return tenant.id, customer, token


def tenant_status(database_url: str, tenant_id: str) -> str:
    with db.connect(database_url) as conn:
        return TenantStore(conn).get_tenant(tenant_id).status


def test_deleted_subscription_locks_the_tenant_out_of_the_proxy(
    proxy, service: TestClient, database_url: str, customer_tenant
) -> None:
    tenant_id, customer, token = customer_tenant
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30).status_code == 200

    payload, sig = signed(subscription_event("customer.subscription.deleted", customer, "canceled"))
    first = service.post("/stripe/webhook", content=payload, headers=sig)
    again = service.post("/stripe/webhook", content=payload, headers=sig)  # Stripe redelivers
    assert first.status_code == 200 and first.json()["duplicate"] is False
    assert first.json()["action"] == "suspended:1"
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert tenant_status(database_url, tenant_id) == "suspended"

    def refused() -> httpx.Response | None:
        response = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        return response if response.status_code == 403 else None

    # The proxy's auth cache TTL is 1 s in the tests: the token is refused within it.
    response = wait_until(refused, timeout=5, interval=0.2, what="the proxy to refuse the tenant")
    assert response.json()["error"]["code"] == "tenant_suspended"

    payload, sig = signed(subscription_event("customer.subscription.resumed", customer, "active"))
    assert service.post("/stripe/webhook", content=payload, headers=sig).json()["action"] == "active:1"
    assert tenant_status(database_url, tenant_id) == "active"


@pytest.mark.parametrize(
    "kind,status,expected",
    [
        ("customer.subscription.paused", "paused", "suspended"),
        ("customer.subscription.updated", "unpaid", "suspended"),
        ("customer.subscription.created", "active", "active"),
        ("invoice.payment_failed", None, "active"),  # suspending on a failed payment is opt-in
    ],
)
def test_subscription_events_drive_tenant_status(
    service: TestClient, database_url: str, customer_tenant, kind: str, status: str | None, expected: str
) -> None:
    tenant_id, customer, _ = customer_tenant
    payload, sig = signed(subscription_event(kind, customer, status or "open"))
    assert service.post("/stripe/webhook", content=payload, headers=sig).status_code == 200
    assert tenant_status(database_url, tenant_id) == expected


def test_payment_failure_suspends_when_configured(database_url: str, fake_stripe: FakeStripe, customer_tenant) -> None:
    tenant_id, customer, _ = customer_tenant
    app = create_app(database_url, MASTER_KEY, relay_settings(fake_stripe, suspend_on_payment_failure=True))
    with TestClient(app) as client:
        payload, sig = signed(subscription_event("invoice.payment_failed", customer, "open"))
        assert client.post("/stripe/webhook", content=payload, headers=sig).json()["action"] == "suspended:1"
    assert tenant_status(database_url, tenant_id) == "suspended"


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "stale timestamp", "edited body", "no header", "not json"],
)
def test_bad_signatures_are_refused_with_400(service: TestClient, database_url: str, customer_tenant, tamper) -> None:
    tenant_id, customer, _ = customer_tenant
    event = subscription_event("customer.subscription.deleted", customer, "canceled")
    payload, sig = signed(event)
    if tamper == "wrong secret":
        payload, sig = signed(event, secret="whsec_someone_else")
    elif tamper == "stale timestamp":
        payload, sig = signed(event, timestamp=int(time.time()) - 3600)
    elif tamper == "edited body":
        payload = payload.replace(b"canceled", b"cancelled")
    elif tamper == "no header":
        sig = {"Content-Type": "application/json"}
    elif tamper == "not json":
        payload, sig = b"not json", signed(event)[1]
    response = service.post("/stripe/webhook", content=payload, headers=sig)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert tenant_status(database_url, tenant_id) == "active"  # nothing happened


def test_meter_error_report_marks_the_named_entries_failed(
    service: TestClient, database_url: str, fake_stripe: FakeStripe, caplog
) -> None:
    identifier = f"bp-20260101T000000-0-{uuid.uuid4().hex[:20]}"
    with db.connect(database_url) as conn:
        conn.execute(
            """INSERT INTO billing_outbox (identifier, tenant_id, customer_id, meter, window_start, value, status,
                                          event_timestamp)
               VALUES (%s, 'tn_x', 'cus_gone', 'llm_cost_microusd', now(), 42, 'sent', extract(epoch FROM now()))""",
            (identifier,),
        )
        conn.commit()
    event_id = f"evt_{uuid.uuid4().hex}"
    fake_stripe.v2_events[event_id] = {
        "id": event_id,
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2026-11-24T00:00:00.000Z",
        "related_object": {"id": "mtr_fake_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_fake_1"},
        "data": {
            "developer_message_summary": "1 event failed",
            "validation_start": "2026-11-24T00:00:00.000Z",
            "validation_end": "2026-11-24T00:01:00.000Z",
            "reason": {
                "error_count": 1,
                "error_types": [
                    {
                        "code": "meter_event_customer_not_found",
                        "error_count": 1,
                        "sample_errors": [
                            {"error_message": "No customer cus_gone", "request": {"identifier": identifier}}
                        ],
                    }
                ],
            },
        },
    }
    thin = {k: v for k, v in fake_stripe.v2_events[event_id].items() if k != "data"}  # thin: no data
    payload, sig = signed(thin)
    response = service.post("/stripe/webhook", content=payload, headers=sig)
    assert response.status_code == 200 and response.json()["action"] == "failed:1"
    assert fake_stripe.calls["v2_events"] == 1  # the data was fetched from Stripe
    with db.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, last_error FROM billing_outbox WHERE identifier = %s", (identifier,)
        ).fetchone()
    assert row["status"] == "failed" and "customer_not_found" in row["last_error"]
    assert any(r.levelname == "ERROR" and "refused meter events" in r.getMessage() for r in caplog.records)


def test_webhook_without_secret_configured_is_503(database_url: str, fake_stripe: FakeStripe) -> None:
    app = create_app(
        database_url, MASTER_KEY, relay_settings(fake_stripe, webhook_secret=None, event_destination_secret=None)
    )
    with TestClient(app) as client:
        payload, sig = signed(subscription_event("customer.subscription.deleted", "cus_x", "canceled"))
        assert client.post("/stripe/webhook", content=payload, headers=sig).status_code == 503
