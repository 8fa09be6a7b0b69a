"""Helpers for the billing tests: relay settings aimed at the fake Stripe, usage rows, sums."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import psycopg

from billingproxy import db
from billingproxy.billing import Relay, StripeSink, stripe_client
from billingproxy.config import BillingSettings, Meter
from billingproxy.metering import UsageRecord, UsageStore
from testkit.fakes.stripe_api import API_KEY, EVENT_DESTINATION_SECRET, WEBHOOK_SECRET, FakeStripe
from testkit.support import REPO, wait_until

COST_METER = "llm_cost_microusd"


def relay_settings(fake: FakeStripe, **overrides) -> BillingSettings:
    """Fast windows and retries, the SDK aimed at the fake."""
    settings = BillingSettings(
        window_s=1,
        grace_s=0,
        meters=(Meter(COST_METER, "cost_microusd"),),
        stripe_api_key=API_KEY,
        stripe_api_base=fake.base_url,
        stripe_timeout_s=1.0,
        webhook_secret=WEBHOOK_SECRET,
        event_destination_secret=EVENT_DESTINATION_SECRET,
        relay_tries=3,
        relay_backoff_s=0.01,
    )
    return dataclasses.replace(settings, **overrides)


def ensure_meters(fake: FakeStripe, settings: BillingSettings) -> None:
    """A correctly configured meter (sum, our payload keys) for each event name that has none:
    the relay holds entries for a meter Stripe lacks, as real Stripe would refuse them. A test
    that wants another meter adds it first."""
    for meter in settings.meters:
        if fake.meter_by_name(meter.event_name) is None:
            fake.add_meter(meter.event_name)


def make_relay(database_url: str, fake: FakeStripe, **overrides) -> Relay:
    """An in-process relay posting to the fake Stripe through the real SDK."""
    settings = relay_settings(fake, **overrides)
    ensure_meters(fake, settings)
    return Relay(database_url, StripeSink(stripe_client(settings), settings.meters), settings)


def relay_env(fake: FakeStripe, database_url: str, **extra: str) -> dict[str, str]:
    """The environment a relay subprocess gets (the same knobs as relay_settings)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": database_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": fake.base_url,
        "STRIPE_TIMEOUT_S": "1",
        "BILLINGPROXY_BILLING_WINDOW_S": "1",
        "BILLINGPROXY_BILLING_GRACE_S": "0",
        "BILLINGPROXY_RELAY_TRIES": "3",
        "BILLINGPROXY_RELAY_BACKOFF_S": "0.01",
        **extra,
    }


def relay_process(fake: FakeStripe, database_url: str, *args: str) -> subprocess.Popen:
    ensure_meters(fake, relay_settings(fake))
    return subprocess.Popen(
        [sys.executable, "-m", "billingproxy", "stripe", "relay", *args],
        env=relay_env(fake, database_url),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def usage_records(tenant_id: str, windows: int, per_window: int, *, start: datetime | None = None) -> list[UsageRecord]:
    """Successful requests spread over ``windows`` one-second windows with awkward costs."""
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    records = []
    for w in range(windows):
        for i in range(per_window):
            cost = Decimal("0.0000123457") * (1 + (w * per_window + i) % 7)
            records.append(
                UsageRecord.from_json(
                    dict(
                        request_id=f"req-{uuid.uuid4().hex}",
                        tenant_id=tenant_id,
                        api_key_id=None,
                        model="gpt-4o-mini",
                        model_group="gpt-4o-mini",
                        provider="openai",
                        call_type="acompletion",
                        prompt_tokens=10 + i,
                        completion_tokens=5,
                        cached_tokens=0,
                        reasoning_tokens=0,
                        total_tokens=15 + i,
                        cost_usd=cost,
                        latency_ms=5,
                        status="success",
                        http_status=200,
                        error_type=None,
                        stream=False,
                        cache_hit=False,
                        customer_id=None,
                        trace_id=None,
                        start_time=start + timedelta(seconds=w, microseconds=i),
                        end_time=None,
                    )
                )
            )
    return records


def store_usage(database_url: str, records: list[UsageRecord], window_s: int = 1) -> None:
    with psycopg.connect(database_url) as conn:
        UsageStore(window_s).write(conn, records)


def expected_micro_usd(conn: psycopg.Connection, tenant_id: str, multiplier: Decimal = Decimal(1)) -> int:
    """What Stripe must hold for a tenant: its billed database sum in whole micro-dollars."""
    total = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) AS total FROM litellm_usage WHERE tenant_id = %s AND status = 'success'",
        (tenant_id,),
    ).fetchone()["total"]
    return int((total * 1_000_000 * multiplier).to_integral_value(ROUND_FLOOR))


def outbox_counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) AS n FROM billing_outbox GROUP BY status").fetchall()
    return {row["status"]: row["n"] for row in rows}


def drain(relay: Relay, database_url: str, *, timeout: float = 60) -> None:
    """Relay passes until nothing is pending (deferred entries become due within a second)."""

    def done() -> bool:
        relay.run_once()
        with db.connect(database_url) as conn:
            counts = outbox_counts(conn)
        return not counts.get("pending") and bool(counts)

    wait_until(done, timeout=timeout, interval=0.2, what="the outbox to drain")
