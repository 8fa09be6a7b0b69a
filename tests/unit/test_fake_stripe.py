"""The fake Stripe itself, driven by the real ``stripe`` SDK: each documented behaviour it models.

No database and no proxy: the SDK talks to the fake over HTTP. Time-dependent behaviours (lag,
24 h windows, invoice finalization) move the fake's clock with ``advance()`` instead of sleeping.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import stripe

from testkit.fakes.stripe_api import (
    API_KEY,
    EVENT_DESTINATION_SECRET,
    WEBHOOK_SECRET,
    FakeStripe,
    deliver,
    delivery_order,
    signed,
)
from testkit.support import wait_until

HOUR = 3600


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    server.summary_lag_s = 0  # the lag has its own test; the others read summaries at once
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake.base_url},  # type: ignore[typeddict-item]
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=5),
    )


def hour_start(ts: float) -> int:
    return int(ts) // HOUR * HOUR


def post(
    client: stripe.StripeClient,
    customer: str,
    value: int | str,
    *,
    event_name: str = "llm_cost_microusd",
    identifier: str | None = None,
    timestamp: int | None = None,
    key: str | None = None,
    payload: dict | None = None,
):
    params: dict = {
        "event_name": event_name,
        "payload": payload if payload is not None else {"stripe_customer_id": customer, "value": str(value)},
        "identifier": identifier or f"id-{uuid.uuid4().hex}",
    }
    if timestamp is not None:
        params["timestamp"] = timestamp
    options = {"idempotency_key": key} if key else {}
    return client.v1.billing.meter_events.create(params=params, options=options)  # type: ignore[arg-type]


def summaries(client: stripe.StripeClient, meter_id: str, customer: str, start: int, end: int, window="hour"):
    params = {"customer": customer, "start_time": start, "end_time": end, "limit": 100}
    if window:
        params["value_grouping_window"] = window
    return list(client.v1.billing.meters.event_summaries.list(meter_id, params=params).auto_paging_iter())  # type: ignore[arg-type]


def test_summaries_lag_behind_accepted_events(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.summary_lag_s = 45
    now = fake.now()
    start, end = hour_start(now), hour_start(now) + HOUR
    post(client, "cus_lag", 100, timestamp=int(now))
    meter_id = fake.meter_by_name("llm_cost_microusd").id
    assert summaries(client, meter_id, "cus_lag", start, end) == []  # accepted, not yet aggregated
    fake.advance(44)
    assert summaries(client, meter_id, "cus_lag", start, end) == []
    fake.advance(2)
    (summary,) = summaries(client, meter_id, "cus_lag", start, end)
    assert (summary.aggregated_value, summary.start_time, summary.end_time) == (100.0, start, end)


def test_summary_windows_must_be_aligned_and_group_by_hour_or_day(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    now = fake.now()
    hour = hour_start(now) - 2 * HOUR
    post(client, "cus_grp", 3, timestamp=hour + 10)
    post(client, "cus_grp", 4, timestamp=hour + HOUR + 10)
    meter_id = fake.meter_by_name("llm_cost_microusd").id
    hourly = summaries(client, meter_id, "cus_grp", hour, hour + 3 * HOUR)
    assert [(s.start_time, s.aggregated_value) for s in hourly] == [(hour + HOUR, 4.0), (hour, 3.0)]
    (whole,) = summaries(client, meter_id, "cus_grp", hour, hour + 3 * HOUR, window=None)
    assert whole.aggregated_value == 7.0
    with pytest.raises(stripe.InvalidRequestError, match="hour"):
        summaries(client, meter_id, "cus_grp", hour + 60, hour + 3 * HOUR)
    with pytest.raises(stripe.InvalidRequestError, match="minute"):
        summaries(client, meter_id, "cus_grp", hour + 1, hour + 3 * HOUR, window=None)
    day = int(now) // 86400 * 86400
    daily = summaries(client, meter_id, "cus_grp", day - 86400, day + 86400, window="day")
    assert sum(s.aggregated_value for s in daily) == 7.0


def test_same_key_with_different_parameters_is_an_idempotency_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    now = int(fake.now())
    first = post(client, "cus_idem", 5, identifier="bp-1", timestamp=now, key="bp-1")
    again = post(client, "cus_idem", 5, identifier="bp-1", timestamp=now, key="bp-1")
    assert again.to_dict() == first.to_dict() and fake.replays == 1
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError) as exc:  # the retry recomputed its timestamp
        post(client, "cus_idem", 5, identifier="bp-1", timestamp=now - 60, key="bp-1")
    assert exc.value.http_status == 400 and fake.idempotency_errors == 1
    assert fake.totals() == {"cus_idem": 5}
    fake.advance(24 * HOUR + 1)  # keys are pruned after 24 h: the same key is a new request
    post(client, "cus_idem", 6, identifier="bp-2", key="bp-1")
    assert fake.totals() == {"cus_idem": 11}


def test_a_saved_500_is_replayed_for_the_same_key(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.faults.extend(["500_saved"])
    for _ in range(3):
        with pytest.raises(stripe.APIError) as exc:
            post(client, "cus_500", 7, identifier="bp-500", key="bp-500")
        assert exc.value.http_status == 500
    assert fake.replays == 2 and fake.totals() == {}  # nothing was recorded, the key is spent
    post(client, "cus_500", 7, identifier="bp-500", key="bp-500-fix")  # a new key goes through
    assert fake.totals() == {"cus_500": 7}


def test_an_edge_500_is_not_saved(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.faults.extend(["500"])
    with pytest.raises(stripe.APIError):
        post(client, "cus_edge", 2, identifier="bp-edge", key="bp-edge")
    post(client, "cus_edge", 2, identifier="bp-edge", key="bp-edge")
    assert fake.totals() == {"cus_edge": 2} and fake.replays == 0


def test_a_dropped_reply_is_replayed_on_retry(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.faults.extend(["drop"])
    with pytest.raises(stripe.APIConnectionError):
        post(client, "cus_drop", 9, identifier="bp-drop", key="bp-drop")
    post(client, "cus_drop", 9, identifier="bp-drop", key="bp-drop")
    assert fake.totals() == {"cus_drop": 9} and fake.replays == 1 and fake.duplicate_identifiers == 0


def test_a_concurrent_request_with_the_same_key_gets_409(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.latency_s = 0.5
    errors: list[stripe.StripeError] = []

    def call(customer: str) -> None:
        try:
            post(client, customer, 1, identifier="bp-conc", key="bp-conc")
        except stripe.StripeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(c,)) for c in ("cus_a", "cus_a")]
    threads[0].start()
    wait_until(lambda: not fake.idle(), timeout=5, what="the first call to be in flight")
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert [e.http_status for e in errors] == [409]
    assert fake.totals() == {"cus_a": 1}


def test_identifiers_are_deduplicated_for_24_hours_only(fake: FakeStripe, client: stripe.StripeClient) -> None:
    post(client, "cus_dup", 4, identifier="bp-dup")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        post(client, "cus_dup", 4, identifier="bp-dup")
    assert exc.value.code == "duplicate_meter_event" and fake.duplicate_identifiers == 1
    fake.advance(24 * HOUR + 1)
    post(client, "cus_dup", 4, identifier="bp-dup")  # Stripe's window has passed: accepted again
    assert fake.identifiers_accepted_twice() == {"bp-dup"}
    assert fake.totals() == {"cus_dup": 8}


def test_timestamps_outside_35_days_or_5_minutes_ahead_are_refused(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    now = int(fake.now())
    with pytest.raises(stripe.InvalidRequestError) as old:
        post(client, "cus_ts", 1, timestamp=now - 35 * 86400 - 60, key="k-ts")
    with pytest.raises(stripe.InvalidRequestError) as ahead:
        post(client, "cus_ts", 1, timestamp=now + 301)
    assert (old.value.code, ahead.value.code) == ("timestamp_too_far_in_past", "timestamp_in_future")
    post(client, "cus_ts", 1, timestamp=now - 35 * 86400 + 60, key="k-ts")  # validation saved nothing
    post(client, "cus_ts", 1, timestamp=now + 299)
    assert fake.totals() == {"cus_ts": 2}


def test_inactive_meter_accepts_then_reports_samples_only(fake: FakeStripe, client: stripe.StripeClient) -> None:
    meter = fake.add_meter("llm_cost_microusd")
    fake.add_customer("cus_inactive")
    fake.deactivate_meter(meter.id)
    identifiers = [f"bp-inactive-{i}" for i in range(5)]
    for identifier in identifiers:
        post(client, "cus_inactive", 10, identifier=identifier)  # accepted: validated asynchronously
    assert fake.totals() == {} and len(fake.errored("archived_meter")) == 5
    (notification,) = fake.meter_error_reports()
    assert notification["type"] == "v1.billing.meter.error_report_triggered" and "data" not in notification
    data = fake.v2_events[notification["id"]]["data"]
    (error_type,) = data["reason"]["error_types"]
    assert error_type["code"] == "archived_meter" and error_type["error_count"] == 5
    samples = {s["request"]["identifier"] for s in error_type["sample_errors"]}
    assert len(samples) == 2 and samples < set(identifiers)  # the report names samples only
    assert fake.meter_error_reports() == []  # each error is reported once

    fake.meter_errors = "sync"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        post(client, "cus_inactive", 10)
    assert exc.value.code == "archived_meter"


def test_unknown_event_name_and_customer_are_reported(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.auto_meters = fake.auto_customers = False
    post(client, "cus_x", 1, event_name="no_such_meter")
    fake.add_meter("llm_cost_microusd")
    post(client, "cus_nobody", 1)
    assert {e.error for e in fake.errored()} == {"no_meter", "meter_event_customer_not_found"}
    kinds = sorted(n["type"] for n in fake.meter_error_reports())
    assert kinds == ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"]
    assert fake.totals() == {}


def test_meter_formula_and_payload_keys_decide_what_is_billed(fake: FakeStripe, client: stripe.StripeClient) -> None:
    last = fake.add_meter("cost_last", formula="last")
    count = fake.add_meter("cost_count", formula="count")
    keyed = fake.add_meter("cost_keyed", customer_key="customer_id", value_key="micro_usd")
    base = hour_start(fake.now()) - HOUR
    for offset, value in ((10, 5), (20, 7), (30, 3)):
        post(client, "cus_f", value, event_name="cost_last", timestamp=base + offset)
        post(client, "cus_f", value, event_name="cost_count", timestamp=base + offset)
    assert [s.aggregated_value for s in summaries(client, last.id, "cus_f", base, base + HOUR)] == [3.0]
    assert [s.aggregated_value for s in summaries(client, count.id, "cus_f", base, base + HOUR)] == [3.0]
    assert fake.billed("cus_f", "cost_last", base, base + HOUR) == 3  # not 15: 'last' bills the last value

    post(client, "cus_f", 8, event_name="cost_keyed", timestamp=base + 5)  # our keys, not the meter's
    post(
        client, "cus_f", 0, event_name="cost_keyed", timestamp=base + 6, payload={"customer_id": "cus_f", "value": "8"}
    )
    post(
        client,
        "cus_f",
        0,
        event_name="cost_keyed",
        timestamp=base + 7,
        payload={"customer_id": "cus_f", "micro_usd": "8"},
    )
    assert sorted(e.error for e in fake.errored()) == ["meter_event_invalid_value", "meter_event_no_customer_defined"]
    assert [s.aggregated_value for s in summaries(client, keyed.id, "cus_f", base, base + HOUR)] == [8.0]

    listed = {m.event_name: m for m in client.v1.billing.meters.list(params={"limit": 2}).auto_paging_iter()}
    assert listed["cost_last"].default_aggregation.formula == "last"
    assert listed["cost_keyed"].customer_mapping.event_payload_key == "customer_id"
    assert listed["cost_keyed"].value_settings.event_payload_key == "micro_usd"
    fake.deactivate_meter(count.id)
    active = [m.id for m in client.v1.billing.meters.list(params={"status": "active"}).auto_paging_iter()]
    assert count.id not in active and last.id in active


def test_customer_subscription_items_are_priced_on_the_meter(fake: FakeStripe, client: stripe.StripeClient) -> None:
    sub = fake.link_customer("cus_sub", "llm_cost_microusd")
    meter = fake.meter_by_name("llm_cost_microusd")
    assert client.v1.customers.retrieve("cus_sub").id == "cus_sub"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    assert exc.value.http_status == 404
    (listed,) = client.v1.subscriptions.list(params={"customer": "cus_sub"}).data
    (item,) = listed["items"].data
    assert listed.id == sub["id"] and item.price.recurring.meter == meter.id
    assert item.price.recurring.usage_type == "metered" and item.current_period_end > item.current_period_start
    items = client.v1.subscription_items.list(params={"subscription": sub["id"]}).data
    assert [i.id for i in items] == [item.id]
    fake.set_subscription_status(sub["id"], "canceled")
    assert client.v1.subscriptions.list(params={"customer": "cus_sub"}).data == []  # canceled are hidden
    assert len(client.v1.subscriptions.list(params={"customer": "cus_sub", "status": "all"}).data) == 1


def test_usage_after_an_invoice_finalized_is_counted_but_never_invoiced(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    now = fake.now()
    anchor = hour_start(now) - 3 * HOUR  # hourly periods; the first two are already final
    fake.link_customer("cus_inv", "llm_cost_microusd", period_start=anchor, period_s=HOUR)
    meter = fake.meter_by_name("llm_cost_microusd")
    post(client, "cus_inv", 40, timestamp=anchor + 60)  # late: that period was final an hour ago
    current = hour_start(now)
    post(client, "cus_inv", 25, timestamp=int(now))  # in the open period
    (late,) = summaries(client, meter.id, "cus_inv", anchor, anchor + HOUR)
    assert late.aggregated_value == 40.0  # Stripe counts it...
    assert fake.invoiced("cus_inv")[("cus_inv", anchor)] == {"llm_cost_microusd": 0}  # ...but bills it nowhere
    assert [e.value for e in fake.uninvoiced("cus_inv")] == [40]
    assert ("cus_inv", current) not in fake.invoiced("cus_inv")

    fake.advance(current + HOUR - now + 30)  # the period ended: its invoice is a draft for an hour
    drafts = [i for i in client.v1.invoices.list(params={"customer": "cus_inv"}).data if i.status == "draft"]
    assert [d.period_start for d in drafts] == [current]
    post(client, "cus_inv", 5)  # the next period's usage, in the preview of its invoice
    preview = client.v1.invoices.create_preview(params={"customer": "cus_inv"})
    assert preview.status == "draft" and preview.lines.data[0].quantity == 5
    fake.advance(HOUR)
    assert fake.invoiced("cus_inv")[("cus_inv", current)] == {"llm_cost_microusd": 25}
    invoices = {i.period_start: i for i in client.v1.invoices.list(params={"customer": "cus_inv"}).auto_paging_iter()}
    assert invoices[current].status == "open" and invoices[current].lines.data[0].quantity == 25
    assert invoices[anchor].lines.data[0].quantity == 0


def test_usage_inside_the_grace_period_is_invoiced(fake: FakeStripe, client: stripe.StripeClient) -> None:
    now = fake.now()
    anchor = hour_start(now) - HOUR  # the last period ended at the hour; finalizes an hour later
    fake.link_customer("cus_grace", "llm_cost_microusd", period_start=anchor, period_s=HOUR)
    post(client, "cus_grace", 12, timestamp=anchor + 5)
    fake.advance(hour_start(now) + HOUR - now + 1)
    assert fake.invoiced("cus_grace")[("cus_grace", anchor)] == {"llm_cost_microusd": 12}
    assert fake.uninvoiced("cus_grace") == []


def test_cancel_by_identifier_within_24_hours(fake: FakeStripe, client: stripe.StripeClient) -> None:
    post(client, "cus_adj", 3, identifier="bp-adj-1")
    post(client, "cus_adj", 4, identifier="bp-adj-2")
    adjustment = client.v1.billing.meter_event_adjustments.create(
        params={"event_name": "llm_cost_microusd", "type": "cancel", "cancel": {"identifier": "bp-adj-1"}}
    )
    assert adjustment.status == "pending" and fake.totals() == {"cus_adj": 4}
    fake.advance(24 * HOUR + 1)
    with pytest.raises(stripe.InvalidRequestError, match="24 hours"):
        client.v1.billing.meter_event_adjustments.create(
            params={"event_name": "llm_cost_microusd", "type": "cancel", "cancel": {"identifier": "bp-adj-2"}}
        )


def test_snapshot_events_verify_with_the_endpoint_secret_only(fake: FakeStripe, client: stripe.StripeClient) -> None:
    sub = fake.link_customer("cus_wh", "llm_cost_microusd")
    event = fake.subscription_event(sub["id"], "customer.subscription.created")
    body, headers = signed(event)
    parsed = client.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert parsed.id == event["id"] and parsed.data.object.customer == "cus_wh"
    with pytest.raises(stripe.SignatureVerificationError):
        client.construct_event(body, headers["Stripe-Signature"], EVENT_DESTINATION_SECRET)
    with pytest.raises(ValueError, match="construct_event"):  # a snapshot is not a thin event
        client.parse_event_notification(body, headers["Stripe-Signature"], WEBHOOK_SECRET)


def test_thin_meter_error_event_and_ping_parse_with_the_sdk(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.auto_customers = False
    post(client, "cus_unknown", 1)
    (notification,) = fake.meter_error_reports()
    body, headers = signed(notification, EVENT_DESTINATION_SECRET)
    parsed = client.parse_event_notification(body, headers["Stripe-Signature"], EVENT_DESTINATION_SECRET)
    assert type(parsed).__name__ == "V1BillingMeterErrorReportTriggeredEventNotification"
    full = parsed.fetch_event()  # GET /v2/core/events/{id}
    assert full.data.reason.error_types[0].code == "meter_event_customer_not_found"
    assert parsed.fetch_related_object().id == fake.meter_by_name("llm_cost_microusd").id
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(body, headers["Stripe-Signature"], WEBHOOK_SECRET)

    ping = fake.ping_event()
    body, headers = signed(ping, EVENT_DESTINATION_SECRET)
    parsed = client.parse_event_notification(body, headers["Stripe-Signature"], EVENT_DESTINATION_SECRET)
    assert type(parsed).__name__ == "V2CoreEventDestinationPingEventNotification"
    assert parsed.related_object.type == "v2.core.event_destination"
    assert parsed.fetch_related_object().status == "enabled"


def test_deliveries_duplicated_and_out_of_order(fake: FakeStripe) -> None:
    sub = fake.link_customer("cus_order", "llm_cost_microusd")
    created = fake.subscription_event(sub["id"], "customer.subscription.created")
    fake.advance(5)
    fake.set_subscription_status(sub["id"], "canceled")
    deleted = fake.subscription_event(sub["id"], "customer.subscription.deleted")
    assert deleted["created"] > created["created"]
    assert created["data"]["object"]["status"] == "active" and deleted["data"]["object"]["status"] == "canceled"

    received: list[dict] = []

    def endpoint(body: bytes, headers: dict[str, str]) -> int:
        event = stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], WEBHOOK_SECRET)
        received.append(json.loads(body))
        return 200 if event else 400

    statuses = deliver(endpoint, [created, deleted], duplicates=2, order="reverse")
    assert statuses == [200] * 4
    assert [e["id"] for e in received] == [deleted["id"]] * 2 + [created["id"]] * 2
    naive = received[-1]["data"]["object"]["status"]  # last delivered wins: wrong
    newest = max(received, key=lambda e: e["created"])["data"]["object"]["status"]
    assert (naive, newest) == ("active", "canceled")
    shuffled = delivery_order([created, deleted], duplicates=3, order="shuffle", seed=3)
    assert sorted(e["id"] for e in shuffled) == sorted([created["id"]] * 3 + [deleted["id"]] * 3)
