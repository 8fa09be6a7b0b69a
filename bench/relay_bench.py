"""Stripe relay throughput: seal and post N outbox entries to the local fake Stripe.

    python -m bench.relay_bench --customers 50 --windows 40

Prints entries, meter-event calls and events/s (the fake answers at once, so this is the
relay's own ceiling: PostgreSQL round trips + the stripe SDK, one call in flight per customer).
"""

from __future__ import annotations

import argparse
import time

from bench.compare import database
from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.billing import make_relay, store_usage, usage_records
from testkit.fakes.stripe_api import FakeStripe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    url, embedded = database()
    fake = FakeStripe().start()
    try:
        with db.connect(url) as conn:
            store = TenantStore(conn)
            tenants = [store.create_tenant(f"bench-{i}", stripe_customer_id=f"cus_b{i}") for i in range(args.customers)]
        store_usage(url, [r for t in tenants for r in usage_records(t.id, windows=args.windows, per_window=2)])
        # The real relay: meter check (cached) and the late-usage subscription read per customer.
        relay = make_relay(url, fake, relay_concurrency=args.concurrency)
        started = time.perf_counter()
        stats = relay.run_once()
        elapsed = time.perf_counter() - started
        print(f"entries sealed {stats.sealed}, sent {stats.sent}, meter-event calls {fake.calls['meter_events']}")
        other = {k: v for k, v in fake.calls.items() if k != "meter_events"}
        print(f"other Stripe calls {other}")
        print(f"relay pass {elapsed:.2f} s -> {stats.sent / elapsed:.0f} events/s (concurrency {args.concurrency})")
    finally:
        fake.stop()
        if embedded is not None:
            embedded.destroy()


if __name__ == "__main__":
    main()
