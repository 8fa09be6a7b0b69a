"""Issue 18 through the real relay, reconciler, CLI and webhook endpoint, against the faithful
fake Stripe (testkit/fakes/stripe_api.py). Each billing scenario ends with Stripe's sum (or its
invoiced sum) == floor(database sum * 10⁶ * markup) for the customer, and no identifier accepted
twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billingproxy import db
from billingproxy.billing import Reconciler, stripe_client
from billingproxy.cli import main as cli
from billingproxy.service import create_app
from billingproxy.tenants import TenantStore
from testkit.billing import (
    COST_METER,
    drain,
    expected_micro_usd,
    make_relay,
    outbox_counts,
    relay_env,
    relay_settings,
    store_usage,
    usage_records,
)
from testkit.fakes.stripe_api import EVENT_DESTINATION_SECRET, WEBHOOK_SECRET, FakeStripe, deliver
from testkit.support import MASTER_KEY, REPO, wait_until

HOUR = 3600
NO_SETTLE = timedelta(0)


def tenant(database_url: str, customer: str | None = None):
    customer = customer or f"cus_{uuid.uuid4().hex[:14]}"
    with db.connect(database_url) as conn:
        return TenantStore(conn).create_tenant(f"fidelity-{uuid.uuid4().hex[:8]}", stripe_customer_id=customer)


def assert_stripe_matches(fake: FakeStripe, database_url: str, t) -> None:
    with db.connect(database_url) as conn:
        expected = expected_micro_usd(conn, t.id, t.price_multiplier)
    assert expected > 0
    assert fake.totals(COST_METER).get(t.stripe_customer_id, 0) == expected
    assert fake.duplicate_identifiers == 0 and not fake.identifiers_accepted_twice()


def outbox_rows(database_url: str) -> list[dict]:
    with db.connect(database_url) as conn:
        return conn.execute(
            "SELECT identifier, kind, status, event_timestamp, late, window_start, attempts, last_error "
            "FROM billing_outbox ORDER BY id"
        ).fetchall()


def reconciler(fake: FakeStripe, database_url: str) -> Reconciler:
    return Reconciler(database_url, stripe_client(relay_settings(fake)))


@pytest.fixture
def service(billing_db: str, fake_stripe: FakeStripe) -> Iterator[TestClient]:
    with TestClient(create_app(billing_db, MASTER_KEY, relay_settings(fake_stripe))) as client:
        yield client


def endpoint(client: TestClient):
    return lambda body, headers: client.post("/stripe/webhook", content=body, headers=headers)


# ---- 1. every parameter fixed when sealed; saved errors settled by reconciliation -----------


def test_lost_reply_retry_of_an_entry_older_than_35_days_sends_the_same_request(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    t = tenant(billing_db)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=36)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=3, start=start))
    fake_stripe.faults.extend(["drop"])  # Stripe bills it, the relay never hears back
    relay = make_relay(billing_db, fake_stripe, relay_tries=1)
    relay.run_once()
    (first,) = outbox_rows(billing_db)
    assert first["status"] == "pending" and first["attempts"] == 1
    sealed_second = int(time.time())
    wait_until(lambda: int(time.time()) > sealed_second, timeout=3, what="the next second")  # a new "now"
    drain(relay, billing_db)
    (entry,) = outbox_rows(billing_db)
    assert entry["status"] == "sent" and entry["event_timestamp"] == first["event_timestamp"]
    assert fake_stripe.replays == 1 and fake_stripe.idempotency_errors == 0  # the same request, replayed
    assert_stripe_matches(fake_stripe, billing_db, t)


def test_saved_500_is_not_retried_forever_and_is_settled_by_a_correction(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    fake_stripe.summary_lag_s = 0
    t = tenant(billing_db)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=3))
    fake_stripe.faults.extend(["500_saved"])  # execution began and failed: Stripe replays the 500
    relay = make_relay(billing_db, fake_stripe)
    relay.run_once()
    (entry,) = outbox_rows(billing_db)
    assert entry["status"] == "reconcile" and "saved error" in entry["last_error"]
    calls = fake_stripe.calls["meter_events"]
    assert calls == 2  # the first try and one replay, then no more
    relay.run_once()
    assert fake_stripe.calls["meter_events"] == calls  # never resent
    hour_range = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    differences = reconciler(fake_stripe, billing_db).run(*hour_range, fix=True, settle=NO_SETTLE)
    assert [d.action for d in differences] == [f"posted {entry_value(billing_db)}"]
    assert reconciler(fake_stripe, billing_db).run(*hour_range, fix=True, settle=NO_SETTLE) == []
    statuses = {(row["kind"], row["status"]) for row in outbox_rows(billing_db)}
    assert statuses == {("usage", "reconciled"), ("fix", "sent")}
    fix = next(row for row in outbox_rows(billing_db) if row["kind"] == "fix")
    assert fix["identifier"].startswith("bp-fix-") and fix["identifier"] != entry["identifier"]
    assert_stripe_matches(fake_stripe, billing_db, t)


def entry_value(database_url: str) -> int:
    with db.connect(database_url) as conn:
        return conn.execute("SELECT value FROM billing_outbox WHERE kind = 'usage'").fetchone()["value"]


# ---- 2. reconcile compares settled hours only ------------------------------------------------


def test_lagging_summaries_fix_twice_right_after_a_relay_pass_posts_nothing(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    fake_stripe.summary_lag_s = 45
    t = tenant(billing_db)
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)  # an hour long over
    store_usage(billing_db, usage_records(t.id, windows=4, per_window=3, start=old))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    posted = fake_stripe.calls["meter_events"]
    start, end = old - timedelta(hours=1), datetime.now(UTC)
    rec = reconciler(fake_stripe, billing_db)
    for _ in range(2):  # summaries still lag: the hour had sends just now, it is not settled
        assert rec.run(start, end, fix=True) == []
        assert rec.unsettled
    assert fake_stripe.calls["meter_events"] == posted
    assert_stripe_matches(fake_stripe, billing_db, t)
    # An hour later Stripe has caught up and the hour is settled: nothing missing, nothing posted.
    an_hour_passes(fake_stripe, billing_db)
    assert rec.run(start, end, fix=True) == [] and not rec.unsettled
    assert fake_stripe.calls["meter_events"] == posted
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"sent": 4}


def an_hour_passes(fake: FakeStripe, database_url: str) -> None:
    """Stripe's clock and our outbox's send times move an hour (and a minute) on."""
    fake.advance(HOUR + 60)
    with db.connect(database_url) as conn:
        conn.execute(
            "UPDATE billing_outbox SET sent_at = sent_at - interval '61 minutes', "
            "last_attempt_at = last_attempt_at - interval '61 minutes'"
        )
        conn.commit()


def test_settled_hour_with_a_missing_event_is_fixed_once(billing_db: str, fake_stripe: FakeStripe) -> None:
    fake_stripe.summary_lag_s = 45
    t = tenant(billing_db)
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    store_usage(billing_db, usage_records(t.id, windows=3, per_window=2, start=old))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    fake_stripe.remove(outbox_rows(billing_db)[0]["identifier"])  # Stripe lost one
    an_hour_passes(fake_stripe, billing_db)
    rec = reconciler(fake_stripe, billing_db)
    start, end = old - timedelta(hours=1), datetime.now(UTC)
    (difference,) = rec.run(start, end, fix=True)
    assert difference.action.startswith("posted ")
    posted = fake_stripe.calls["meter_events"]
    # The fix lags in Stripe's summaries too: right after it, its hour is not settled again.
    assert rec.run(start, end, fix=True) == [] and rec.unsettled
    an_hour_passes(fake_stripe, billing_db)
    assert rec.run(start, end, fix=True) == [] and not rec.unsettled
    assert fake_stripe.calls["meter_events"] == posted
    assert_stripe_matches(fake_stripe, billing_db, t)


def test_reconcile_cli_takes_settle_minutes(billing_db: str, fake_stripe: FakeStripe) -> None:
    t = tenant(billing_db)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=2))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    env = relay_env(fake_stripe, billing_db)
    now = datetime.now(UTC)
    args = ["stripe", "reconcile", "--from", f"{now - timedelta(hours=2):%Y-%m-%dT%H:%M:%S}"]
    args += ["--to", f"{now + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}", "--fix"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "not settled yet" in result.output and "no differences" in result.output
    assert fake_stripe.duplicate_identifiers == 0
    assert_stripe_matches(fake_stripe, billing_db, t)


# ---- 3. webhooks: order, duplicates, thin events, meter error reports ------------------------


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
    assert [r.json()["action"] for r in responses] == ["suspended:1", "duplicate", "stale", "duplicate"]
    with db.connect(billing_db) as conn:
        assert TenantStore(conn).get_tenant(t.id).status == "suspended"


def test_an_older_active_update_does_not_override_a_newer_past_due_or_pause(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    t = tenant(billing_db)
    sub = fake_stripe.link_customer(t.stripe_customer_id, COST_METER)
    active = fake_stripe.subscription_event(sub["id"])
    fake_stripe.advance(3)
    fake_stripe.set_subscription_status(sub["id"], "paused")
    paused = fake_stripe.subscription_event(sub["id"], "customer.subscription.paused")
    fake_stripe.advance(3)
    fake_stripe.set_subscription_status(sub["id"], "active")
    resumed = fake_stripe.subscription_event(sub["id"], "customer.subscription.resumed")
    # Delivered shuffled and duplicated: the newest (resumed, active) must win.
    responses = deliver(endpoint(service), [active, paused, resumed], WEBHOOK_SECRET, duplicates=2, order="shuffle")
    assert all(r.status_code == 200 for r in responses)
    with db.connect(billing_db) as conn:
        assert TenantStore(conn).get_tenant(t.id).status == "active"
        (state,) = conn.execute("SELECT status, event_id FROM stripe_subscriptions").fetchall()
    assert state == {"status": "active", "event_id": resumed["id"]}


def test_same_second_events_are_settled_by_reading_the_subscription(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    t = tenant(billing_db)
    sub = fake_stripe.link_customer(t.stripe_customer_id, COST_METER)
    second = int(fake_stripe.now())
    active = fake_stripe.subscription_event(sub["id"], created=second)
    fake_stripe.set_subscription_status(sub["id"], "unpaid")
    unpaid = fake_stripe.subscription_event(sub["id"], created=second)
    deliver(endpoint(service), [unpaid, active], WEBHOOK_SECRET)  # same `created`, wrong order
    with db.connect(billing_db) as conn:
        assert TenantStore(conn).get_tenant(t.id).status == "suspended"  # what Stripe says now


def test_thin_event_and_ping_on_the_same_endpoint_with_the_destination_secret(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    fake_stripe.auto_customers = False  # the customer is unknown to Stripe: an async meter error
    t = tenant(billing_db)
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=2))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    notifications = [fake_stripe.ping_event(), *fake_stripe.meter_error_reports()]
    responses = deliver(endpoint(service), notifications, EVENT_DESTINATION_SECRET)
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert [r.json()["action"] for r in responses] == ["pong", "failed:1"]
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 1}
    (wrong,) = deliver(endpoint(service), [fake_stripe.ping_event()], "whsec_someone_else")
    assert wrong.status_code == 400


def test_meter_error_report_marks_every_affected_entry_and_reconcile_settles_them(
    billing_db: str, fake_stripe: FakeStripe, service: TestClient
) -> None:
    fake_stripe.auto_customers = False
    fake_stripe.summary_lag_s = 0
    t = tenant(billing_db)  # a customer id Stripe does not know yet
    store_usage(billing_db, usage_records(t.id, windows=5, per_window=1))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    (report,) = fake_stripe.meter_error_reports()
    (error_type,) = fake_stripe.v2_events[report["id"]]["data"]["reason"]["error_types"]
    assert error_type["error_count"] == 5 and len(error_type["sample_errors"]) == 2  # samples only
    (response,) = deliver(endpoint(service), [report], EVENT_DESTINATION_SECRET)
    assert response.status_code == 200 and response.json()["action"] == "failed:5"
    with db.connect(billing_db) as conn:
        assert outbox_counts(conn) == {"failed": 5}
    fake_stripe.add_customer(t.stripe_customer_id)  # the operator fixes the account
    hour_range = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    reconciler(fake_stripe, billing_db).run(*hour_range, fix=True, settle=NO_SETTLE)
    with db.connect(billing_db) as conn:
        counts = outbox_counts(conn)
    assert "failed" not in counts and counts.get("reconciled") == 5
    assert_stripe_matches(fake_stripe, billing_db, t)


# ---- 4. stripe check; the relay holds a misconfigured meter ----------------------------------


def test_misconfigured_meter_is_held_back_until_fixed(billing_db: str, fake_stripe: FakeStripe, caplog) -> None:
    meter = fake_stripe.add_meter(COST_METER, formula="last")
    t = tenant(billing_db)
    fake_stripe.link_customer(t.stripe_customer_id, COST_METER)
    store_usage(billing_db, usage_records(t.id, windows=3, per_window=2))
    relay = make_relay(billing_db, fake_stripe)
    stats = relay.run_once()
    assert stats.held == 3 and stats.sent == 0
    assert not fake_stripe.events  # nothing posted to a meter that would bill the last window only
    assert all("aggregation is 'last'" in row["last_error"] for row in outbox_rows(billing_db))
    assert any(r.levelname == "ERROR" and "held" in r.getMessage() for r in caplog.records)
    meter.formula = "sum"  # fixed in Stripe; the relay's cached check expires
    relay.sink.meter_check.forget()
    with db.connect(billing_db) as conn:
        conn.execute("UPDATE billing_outbox SET next_attempt_at = now()")  # test-only: skip the hold delay
        conn.commit()
    drain(relay, billing_db)
    assert_stripe_matches(fake_stripe, billing_db, t)


def stripe_check(fake: FakeStripe, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "billingproxy", "stripe", "check"],
        env=relay_env(fake, database_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stripe_check_on_a_correct_and_a_misconfigured_account(billing_db: str, fake_stripe: FakeStripe) -> None:
    good = tenant(billing_db, "cus_good")
    fake_stripe.link_customer(good.stripe_customer_id, COST_METER)
    ok = stripe_check(fake_stripe, billing_db)
    print(ok.stdout)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "ok: 1 meters (llm_cost_microusd), 1 linked customers checked"

    meter = fake_stripe.meter_by_name(COST_METER)
    meter.formula, meter.customer_key, meter.value_key = "last", "customer", "amount"
    fake_stripe.add_meter("llm_input_tokens", status="inactive")
    tenant(billing_db, "cus_Missing")
    fake_stripe.auto_customers = False
    unsubscribed = tenant(billing_db, "cus_NoSubscription")
    fake_stripe.add_customer(unsubscribed.stripe_customer_id)
    env_extra = {"BILLINGPROXY_INPUT_TOKENS_METER": "llm_input_tokens", "BILLINGPROXY_OUTPUT_TOKENS_METER": "llm_out"}
    bad = subprocess.run(
        [sys.executable, "-m", "billingproxy", "stripe", "check"],
        env=relay_env(fake_stripe, billing_db, **env_extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(bad.stdout)
    assert bad.returncode == 5
    lines = bad.stdout.strip().splitlines()
    assert f"meter {COST_METER} ({meter.id}): aggregation is 'last', must be 'sum'" in lines
    assert any("customer mapping key is 'customer', we send 'stripe_customer_id'" in line for line in lines)
    assert any("value key is 'amount', we send 'value'" in line for line in lines)
    assert any(line.startswith("meter llm_input_tokens") and "status is 'inactive'" in line for line in lines)
    assert "meter llm_out: no meter has this event name (events would be refused)" in lines
    assert any(line.startswith("customer cus_Missing") and "no such customer" in line for line in lines)
    assert any(
        line.startswith("customer cus_NoSubscription") and "no live subscription item priced on meter" in line
        for line in lines
    )
    assert lines[-1].startswith(f"{len(lines) - 1} problems: 3 meters")


# ---- 5. late usage -----------------------------------------------------------------------------


def test_late_usage_after_invoice_finalization_is_posted_into_the_open_period(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    now = time.time()
    anchor = int(now) // HOUR * HOUR - 3 * HOUR  # hourly billing periods; the first is final
    t = tenant(billing_db)
    fake_stripe.link_customer(t.stripe_customer_id, COST_METER, period_start=anchor, period_s=HOUR)
    start = datetime.fromtimestamp(anchor + 600, UTC)
    store_usage(billing_db, usage_records(t.id, windows=2, per_window=3, start=start))
    relay = make_relay(billing_db, fake_stripe)
    drain(relay, billing_db)
    rows = outbox_rows(billing_db)
    assert all(row["late"] and row["window_start"] < datetime.fromtimestamp(anchor + HOUR, UTC) for row in rows)
    assert all(row["event_timestamp"] >= int(now) for row in rows)  # in the open period
    assert_stripe_matches(fake_stripe, billing_db, t)
    fake_stripe.advance(3 * HOUR)  # the open period has been invoiced and finalized too
    assert fake_stripe.uninvoiced(t.stripe_customer_id) == []
    with db.connect(billing_db) as conn:
        expected = expected_micro_usd(conn, t.id, t.price_multiplier)
    invoiced = fake_stripe.invoiced(t.stripe_customer_id)
    assert sum(q.get(COST_METER, 0) for q in invoiced.values()) == expected

    since = f"{start - timedelta(hours=1):%Y-%m-%dT%H:%M:%S}"
    listed = CliRunner().invoke(cli, ["stripe", "late", "--since", since, "--json"], env={"DATABASE_URL": billing_db})
    assert listed.exit_code == 0, listed.output
    assert sorted(row["identifier"] for row in json.loads(listed.output)) == sorted(row["identifier"] for row in rows)


def test_usage_in_the_open_period_or_an_unfinalized_invoice_is_not_late(
    billing_db: str, fake_stripe: FakeStripe
) -> None:
    fake_stripe.finalize_grace_s = 3 * HOUR  # the previous period's invoice is still a draft
    anchor = int(time.time()) // HOUR * HOUR - HOUR
    t = tenant(billing_db)
    fake_stripe.link_customer(t.stripe_customer_id, COST_METER, period_start=anchor, period_s=HOUR)
    store_usage(
        billing_db, usage_records(t.id, windows=1, per_window=2, start=datetime.fromtimestamp(anchor + 60, UTC))
    )
    recent = max(datetime.now(UTC) - timedelta(minutes=2), datetime.fromtimestamp(anchor + HOUR, UTC))
    store_usage(billing_db, usage_records(t.id, windows=1, per_window=2, start=recent.replace(microsecond=0)))
    drain(make_relay(billing_db, fake_stripe), billing_db)
    rows = outbox_rows(billing_db)
    assert len(rows) == 2 and not any(row["late"] for row in rows)
    assert all(row["event_timestamp"] == int(row["window_start"].timestamp()) for row in rows)
    assert_stripe_matches(fake_stripe, billing_db, t)
