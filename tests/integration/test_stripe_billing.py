"""Stripe metered billing end to end: proxy → usage rows → outbox → relay → (fake) Stripe.

The real ``stripe`` SDK talks to a local fake Stripe that enforces identifier dedup, idempotency
keys and one concurrent call per customer, and injects 429s, 500s, timeouts and dropped
connections. Invariant everywhere: Stripe's sum per customer == the database's, exactly.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openai

from billingproxy import db
from billingproxy.billing import Reconciler, stripe_client
from billingproxy.prices import PriceBook, PriceStore, TokenUsage
from billingproxy.prices.store import FIRST_EFFECTIVE as EPOCH
from billingproxy.tenants import TenantStore
from testkit.billing import (
    drain,
    expected_micro_usd,
    make_relay,
    outbox_counts,
    relay_process,
    relay_settings,
    store_usage,
    usage_records,
)
from testkit.fakes.stripe_api import FakeStripe
from testkit.support import wait_until

NO_SETTLE = timedelta(0)  # reconcile every hour at once (the summary lag is off in those tests)


def tenants_with_customers(database_url: str, count: int, multipliers: dict[int, str] | None = None) -> list:
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenants = []
        for i in range(count):
            customer = f"cus_{uuid.uuid4().hex[:14]}"
            tenant = store.create_tenant(f"bill-{uuid.uuid4().hex[:8]}", stripe_customer_id=customer)
            if multipliers and i in multipliers:  # a markup is a rate card on every model, for all time
                PriceStore(conn).set_rate_card(tenant.id, None, valid_from=EPOCH, multiplier=multipliers[i])
            tenants.append(tenant)
        return tenants


def test_stripe_sums_equal_database_sums_through_the_proxy_under_faults(
    proxy, database_url: str, fake_stripe: FakeStripe
) -> None:
    """Must show 1: real proxy traffic for several tenants; 429/500/timeout/dropped connections
    and a relay killed mid-batch; Stripe's sum per customer equals the database's exactly."""
    tenants = tenants_with_customers(database_url, 3, {1: "1.25"})
    with db.connect(database_url) as conn:
        tokens = [TenantStore(conn).create_key(t.id)[1] for t in tenants]

    def traffic(token: str, tenant_index: int) -> None:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
        for i in range(12):
            content = f"bill me please number {i} " + ("[[fault:500]]" if i == 5 else "")
            kwargs = {"model": "gpt-4o-mini" if i % 2 else "gpt-4o", "max_tokens": 3 + i + tenant_index}
            try:
                if i % 3 == 0:
                    stream = client.chat.completions.create(
                        messages=[{"role": "user", "content": content}],
                        stream=True,
                        stream_options={"include_usage": True},
                        **kwargs,
                    )
                    for _ in stream:
                        pass
                else:
                    client.chat.completions.create(messages=[{"role": "user", "content": content}], **kwargs)
            except openai.InternalServerError:
                assert i == 5

    threads = [threading.Thread(target=traffic, args=(token, n)) for n, token in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [t.id for t in tenants]

    def all_rows_stored() -> bool:
        with db.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) AS n FROM litellm_usage WHERE tenant_id = ANY(%s)", (ids,)).fetchone()
        return row["n"] == 36

    wait_until(all_rows_stored, timeout=30, what="36 usage rows")

    fake_stripe.latency_s = 0.05
    fake_stripe.faults.extend(["429", "500", "timeout", "drop", "429", "drop", "500"])
    killed = relay_process(fake_stripe, database_url, "--loop", "--interval", "0.2")
    try:
        wait_until(lambda: len(fake_stripe.events) >= 3, timeout=60, what="the first relay to post a few events")
    finally:
        killed.send_signal(signal.SIGKILL)  # mid-batch: no chance to mark what it posted
        killed.wait(10)
    # Stripe may still be processing the dead relay's last call; ours start after it ends.
    wait_until(fake_stripe.idle, timeout=10, what="the killed relay's last call to end")
    drain(make_relay(database_url, fake_stripe), database_url)

    totals = fake_stripe.totals()
    with db.connect(database_url) as conn:
        for tenant in tenants:
            expected = expected_micro_usd(conn, tenant.id, tenant.price_multiplier)
            assert expected > 0
            assert totals[tenant.stripe_customer_id] == expected, tenant.name
        sent = conn.execute(
            "SELECT identifier FROM billing_outbox WHERE tenant_id = ANY(%s) AND status = 'sent'", (ids,)
        ).fetchall()
    ours = {row["identifier"] for row in sent}
    assert ours <= set(fake_stripe.events)
    assert fake_stripe.duplicate_identifiers == 0  # no identifier was ever accepted twice
    assert fake_stripe.concurrency_violations == 0
    assert fake_stripe.replays >= 1  # the dropped connections were settled by idempotent replays
    assert not fake_stripe.faults  # every injected fault was hit


def test_two_relays_at_once_post_each_entry_once(billing_db: str, fake_stripe: FakeStripe) -> None:
    """Must show 2: two relay processes race over the same outbox."""
    tenants = tenants_with_customers(billing_db, 8)
    store_usage(billing_db, [r for t in tenants for r in usage_records(t.id, windows=10, per_window=3)])
    fake_stripe.latency_s = 0.01
    relays = [relay_process(fake_stripe, billing_db) for _ in range(2)]
    outputs = [relay.communicate(timeout=120)[0].decode() for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0], outputs

    with db.connect(billing_db) as conn:
        counts = outbox_counts(conn)
        assert counts == {"sent": 80}, counts  # 8 tenants x 10 windows, each sealed once
        for tenant in tenants:
            assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)
    assert fake_stripe.calls["meter_events"] == 80  # not one call more: nothing posted twice
    assert fake_stripe.replays == 0 and fake_stripe.duplicate_identifiers == 0
    assert fake_stripe.concurrency_violations == 0


def test_late_rows_are_reported_as_a_second_entry_with_the_rounding_carried(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    (tenant,) = tenants_with_customers(billing_db, 1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    store_usage(billing_db, usage_records(tenant.id, windows=3, per_window=5, start=start))
    relay = make_relay(billing_db, fake_stripe)
    drain(relay, billing_db)
    first = len(fake_stripe.events)
    # A spill file replayed after the windows were reported: same windows, new requests.
    store_usage(billing_db, usage_records(tenant.id, windows=3, per_window=2, start=start))
    drain(relay, billing_db)
    with db.connect(billing_db) as conn:
        assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)
        seals = conn.execute("SELECT identifier FROM billing_outbox WHERE identifier LIKE 'bp-%%-1-%%'").fetchall()
    assert first == 3 and len(seals) == 3  # each window got a second, delta-only entry


def test_tenant_without_customer_waits_until_linked(billing_db: str, fake_stripe: FakeStripe) -> None:
    with db.connect(billing_db) as conn:
        tenant = TenantStore(conn).create_tenant(f"nocus-{uuid.uuid4().hex[:6]}")
    store_usage(billing_db, usage_records(tenant.id, windows=2, per_window=4))
    relay = make_relay(billing_db, fake_stripe)
    assert relay.run_once().sealed == 0 and not fake_stripe.events
    with db.connect(billing_db) as conn:
        tenant = TenantStore(conn).update_tenant(tenant.id, stripe_customer_id="cus_linkedlater")
    drain(relay, billing_db)
    with db.connect(billing_db) as conn:
        assert fake_stripe.totals()["cus_linkedlater"] == expected_micro_usd(conn, tenant.id)


def test_permanent_refusal_marks_failed_and_reconcile_fixes_it(billing_db: str, fake_stripe: FakeStripe) -> None:
    """An entry Stripe refused for good is failed, not retried forever; reconcile --fix posts it."""
    # Summary lag off and no settle delay: these tests are about what reconcile does in a settled hour.
    fake_stripe.summary_lag_s = 0
    (tenant,) = tenants_with_customers(billing_db, 1)
    store_usage(billing_db, usage_records(tenant.id, windows=1, per_window=3))
    fake_stripe.auto_customers = False  # the customer is unknown to Stripe ...
    fake_stripe.meter_errors = "sync"  # ... and Stripe says so at once: a 400, a permanent error
    relay = make_relay(billing_db, fake_stripe)
    assert relay.run_once().failed == 1
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 1}
        start = datetime.now(UTC) - timedelta(hours=1)
        reconciler = Reconciler(billing_db, stripe_client(relay_settings(fake_stripe)))
        fake_stripe.add_customer(tenant.stripe_customer_id)  # the operator fixes the account
        differences = reconciler.run(start, datetime.now(UTC), fix=True, settle=timedelta(0))
        assert [d.missing for d in differences] == [expected_micro_usd(conn, tenant.id)]
        assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)
        assert outbox_counts(conn) == {"reconciled": 1, "sent": 1}  # the failed entry and its fix
        assert reconciler.run(start, datetime.now(UTC), settle=timedelta(0)) == []


def test_reconcile_finds_and_fixes_a_removed_event_and_cancels_an_over_report(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    """Must show 4."""
    # Summary lag off and no settle delay: these tests are about what reconcile does in a settled hour.
    fake_stripe.summary_lag_s = 0
    tenants = tenants_with_customers(billing_db, 2)
    store_usage(billing_db, [r for t in tenants for r in usage_records(t.id, windows=4, per_window=3)])
    drain(make_relay(billing_db, fake_stripe), billing_db)
    victim = next(iter(fake_stripe.events))
    lost = fake_stripe.remove(victim)
    reconciler = Reconciler(billing_db, stripe_client(relay_settings(fake_stripe)))
    start, end = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)

    found = reconciler.run(start, end, settle=NO_SETTLE)
    assert [(d.customer_id, d.missing, d.excess) for d in found] == [(lost.customer, lost.value, 0)]
    fixed = reconciler.run(start, end, fix=True, settle=NO_SETTLE)
    assert fixed[0].action == f"posted {lost.value}"
    assert reconciler.run(start, end, settle=NO_SETTLE) == []
    assert reconciler.run(start, end, fix=True, settle=NO_SETTLE) == []  # idempotent: nothing posted twice
    with db.connect(billing_db) as conn:
        for tenant in tenants:
            assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)

    # The "lost" event turns up after all: now Stripe holds too much, and our fix is cancelled.
    fake_stripe.events[victim] = lost
    over = reconciler.run(start, end, fix=True, settle=NO_SETTLE)
    assert [(d.excess, d.action) for d in over] == [(lost.value, f"cancelled {lost.value}")]
    assert reconciler.run(start, end, settle=NO_SETTLE) == []


def test_unconfirmed_for_a_day_is_reconciled_not_resent(billing_db: str, fake_stripe: FakeStripe) -> None:
    """An entry whose post had an unknown outcome 23 h ago is settled by reconciliation."""
    # Summary lag off and no settle delay: these tests are about what reconcile does in a settled hour.
    fake_stripe.summary_lag_s = 0
    (tenant,) = tenants_with_customers(billing_db, 1)
    store_usage(billing_db, usage_records(tenant.id, windows=2, per_window=2))
    fake_stripe.faults.extend(["drop"] * 3)  # accepted, but the relay never hears back
    relay = make_relay(billing_db, fake_stripe)
    relay.run_once()
    with db.connect(billing_db) as conn:
        conn.execute("UPDATE billing_outbox SET created_at = now() - interval '24 hours', next_attempt_at = now()")
        conn.commit()
    calls = fake_stripe.calls["meter_events"]
    stats = relay.run_once()
    assert stats.to_reconcile >= 1 and fake_stripe.calls["meter_events"] == calls + (2 - stats.to_reconcile)
    reconciler = Reconciler(billing_db, stripe_client(relay_settings(fake_stripe)))
    assert reconciler.run(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), fix=True, settle=NO_SETTLE) == []
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"sent": 2}  # Stripe had them: confirmed, nothing resent
        assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)
    assert fake_stripe.duplicate_identifiers == 0


def test_stripe_calls_scale_with_tenants_times_windows_not_requests(billing_db: str, fake_stripe: FakeStripe) -> None:
    """Must show 5: 10,000 requests from 5 tenants over 4 one-minute windows → 20 meter events."""
    tenants = tenants_with_customers(billing_db, 5)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    records = []
    for tenant in tenants:
        for minute in range(4):
            batch = usage_records(tenant.id, windows=1, per_window=500, start=start + timedelta(minutes=minute))
            records.extend(batch)
    assert len(records) == 10_000
    store_usage(billing_db, records, window_s=60)
    relay = make_relay(billing_db, fake_stripe, window_s=60)
    drain(relay, billing_db)
    assert fake_stripe.calls["meter_events"] == 20
    with db.connect(billing_db) as conn:
        for tenant in tenants:
            assert fake_stripe.totals()[tenant.stripe_customer_id] == expected_micro_usd(conn, tenant.id)


def test_token_meters_and_markup(billing_db: str, fake_stripe: FakeStripe) -> None:
    from billingproxy.config import Meter

    tenants = tenants_with_customers(billing_db, 1, {0: "1.5"})
    with db.connect(billing_db) as conn:
        book = PriceBook()
        book.load(conn)
    records = []
    for r in usage_records(tenants[0].id, windows=3, per_window=4):  # priced as the proxy prices them
        tokens = TokenUsage(r.prompt_tokens, r.completion_tokens)
        cost, version_id = book.cost(r.model, tokens, at=r.start_time, tenant_id=r.tenant_id)
        list_cost = (r.prompt_tokens * Decimal("0.15") + r.completion_tokens * Decimal("0.6")) / 1_000_000
        assert cost == list_cost * Decimal("1.5") and version_id is not None  # the markup is in the row
        records.append(dataclasses.replace(r, cost_usd=cost, price_version_id=version_id))
    store_usage(billing_db, records)
    meters = (Meter("cost", "cost_microusd"), Meter("in_tokens", "input_tokens"), Meter("out_tokens", "output_tokens"))
    drain(make_relay(billing_db, fake_stripe, meters=meters), billing_db)
    customer = tenants[0].stripe_customer_id
    assert fake_stripe.totals("in_tokens")[customer] == sum(r.prompt_tokens for r in records)
    assert fake_stripe.totals("out_tokens")[customer] == sum(r.completion_tokens for r in records)
    with db.connect(billing_db) as conn:
        billed = expected_micro_usd(conn, tenants[0].id)  # the rows' (rate-carded) sum, floored
        assert fake_stripe.totals("cost")[customer] == billed
        assert billed == int(sum(r.cost_usd for r in records) * 1_000_000)
