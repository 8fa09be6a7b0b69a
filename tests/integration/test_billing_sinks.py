"""The other sinks behind the same outbox: Lago's batch events API and a signed generic webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections import deque
from collections.abc import Iterator

import pytest
from aiohttp import web

from billingproxy import db
from billingproxy.billing import LagoSink, Relay, WebhookSink
from billingproxy.tenants import TenantStore
from testkit.billing import drain, expected_micro_usd, outbox_counts, relay_settings, store_usage, usage_records
from testkit.fakes.aioserver import ThreadedAioServer
from testkit.fakes.stripe_api import FakeStripe

LAGO_KEY = "lago-test-key"
HOOK_SECRET = "hook-secret"


class Receiver(ThreadedAioServer):
    """Records JSON batches; answers the statuses in ``plan`` first, then 200."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.plan: deque[int] = deque()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.receive)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.plan:
            return web.json_response({"error": "injected"}, status=self.plan.popleft())
        self.bodies.append({"path": request.path, "raw": raw, **json.loads(raw)})
        self.headers.append(dict(request.headers))
        return web.json_response({}, status=200)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def run_sink(billing_db: str, sink, tenants: int = 3) -> list:
    with db.connect(billing_db) as conn:
        created = [TenantStore(conn).create_tenant(f"sink-{uuid.uuid4().hex[:8]}") for _ in range(tenants)]
    store_usage(billing_db, [r for t in created for r in usage_records(t.id, windows=4, per_window=3)])
    settings = relay_settings(FakeStripe(), sink=sink.name)
    drain(Relay(billing_db, sink, settings), billing_db)  # injected failures defer a batch briefly
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"sent": tenants * 4}
    return created


def test_lago_batches_with_transaction_ids(billing_db: str, receiver: Receiver) -> None:
    receiver.plan.extend([503, 503, 503])  # one batch fails all its tries, then succeeds next pass
    tenants = run_sink(billing_db, LagoSink(receiver.base_url, LAGO_KEY))
    events = [e for body in receiver.bodies for e in body["events"]]
    assert all(body["path"] == "/api/v1/events/batch" for body in receiver.bodies)
    assert all(h["Authorization"] == f"Bearer {LAGO_KEY}" for h in receiver.headers)
    assert len({e["transaction_id"] for e in events}) == len(events) == 12
    with db.connect(billing_db) as conn:
        for tenant in tenants:
            mine = [e for e in events if e["external_subscription_id"] == tenant.id]
            assert sum(e["properties"]["value"] for e in mine) == expected_micro_usd(conn, tenant.id)
            assert {e["code"] for e in mine} == {"llm_cost_microusd"}


def test_webhook_sink_signs_every_batch(billing_db: str, receiver: Receiver) -> None:
    receiver.plan.extend([500, 500, 500])
    tenants = run_sink(billing_db, WebhookSink(receiver.base_url + "/billing", HOOK_SECRET))
    for body, headers in zip(receiver.bodies, receiver.headers, strict=True):
        fields = dict(part.split("=", 1) for part in headers["X-BillingProxy-Signature"].split(","))
        digest = hmac.new(HOOK_SECRET.encode(), f"{fields['t']}.".encode() + body["raw"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(digest, fields["v1"])
    events = [e for body in receiver.bodies for e in body["events"]]
    assert len({e["identifier"] for e in events}) == len(events) == 12
    with db.connect(billing_db) as conn:
        for tenant in tenants:
            assert sum(e["value"] for e in events if e["tenant_id"] == tenant.id) == expected_micro_usd(conn, tenant.id)


def test_a_refusing_sink_marks_entries_failed(billing_db: str, receiver: Receiver) -> None:
    receiver.plan.extend([422] * 10)
    with db.connect(billing_db) as conn:
        tenant = TenantStore(conn).create_tenant(f"sink-{uuid.uuid4().hex[:8]}")
    store_usage(billing_db, usage_records(tenant.id, windows=2, per_window=2))
    sink = LagoSink(receiver.base_url, LAGO_KEY)
    stats = Relay(billing_db, sink, relay_settings(FakeStripe(), sink="lago")).run_once()
    assert stats.failed == 2 and stats.calls == 1  # one batch, refused once, not retried
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 2}
