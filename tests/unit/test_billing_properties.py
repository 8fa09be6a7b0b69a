"""Property tests (hypothesis): pricing, micro-dollar rounding carry, aggregation into windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billingproxy.billing import MICRO, STRIPE_MAX_AGE, WindowDelta, event_timestamp, identifier, plan_entries
from billingproxy.config import Meter
from billingproxy.metering import COST_QUANTUM, ModelPrice

COST = Meter("cost", "cost_microusd")
TOKENS_IN = Meter("in", "input_tokens")
START = datetime(2026, 11, 1, tzinfo=UTC)

# Per-request costs as NUMERIC(20,10) holds them: up to 10 decimal places.
costs = st.decimals(min_value=Decimal(0), max_value=Decimal(50), places=10, allow_nan=False, allow_infinity=False)
multipliers = st.decimals(min_value=Decimal("0.5"), max_value=Decimal(3), places=6)


def deltas_from(costs_per_window: list[list[Decimal]]) -> list[WindowDelta]:
    return [
        WindowDelta(START + timedelta(minutes=i), sum(costs, Decimal(0)), 3 * len(costs), len(costs), 0)
        for i, costs in enumerate(costs_per_window)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(costs, max_size=20), max_size=30), multipliers)
def test_reported_units_equal_the_floored_database_sum(costs_per_window, multiplier) -> None:
    deltas = deltas_from(costs_per_window)
    entries, carries = plan_entries("tn_1", "cus_1", multiplier, [COST, TOKENS_IN], deltas, {})
    total = sum((c for window in costs_per_window for c in window), Decimal(0))
    reported = sum(e.value for e in entries if e.meter == "cost")
    assert reported == int((total * MICRO * multiplier).to_integral_value(ROUND_FLOOR))
    assert sum(e.value for e in entries if e.meter == "in") == sum(d.input_tokens for d in deltas)
    assert all(e.value > 0 for e in entries)  # Stripe takes no zero or negative events
    accrued, units = carries["cost"]
    assert 0 <= accrued - units < 1  # what is carried is always less than one unit


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(costs, min_size=1, max_size=10), min_size=1, max_size=20), st.integers(1, 19))
def test_sealing_in_several_passes_reports_the_same_total(costs_per_window, split) -> None:
    """Sealing windows in two relay passes (with the carry saved between) changes nothing."""
    deltas = deltas_from(costs_per_window)
    whole, _ = plan_entries("tn_1", "cus_1", Decimal(1), [COST], deltas, {})
    split = min(split, len(deltas))
    first, carries = plan_entries("tn_1", "cus_1", Decimal(1), [COST], deltas[:split], {})
    second, _ = plan_entries("tn_1", "cus_1", Decimal(1), [COST], deltas[split:], carries)
    assert sum(e.value for e in first + second) == sum(e.value for e in whole)
    assert [e.identifier for e in first + second] == [e.identifier for e in whole]


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=200), st.integers(0, 10_000))
def test_identifiers_are_deterministic_short_and_distinct_per_seal(tenant, meter, seal) -> None:
    a = identifier(tenant, meter, START, seal)
    assert a == identifier(tenant, meter, START, seal)
    assert len(a) <= 100 and a.isascii()
    assert a != identifier(tenant, meter, START, seal + 1)
    assert a != identifier(tenant, meter, START + timedelta(minutes=1), seal)


prices = st.decimals(min_value=Decimal(0), max_value=Decimal("0.001"), places=12)
tokens = st.integers(0, 2_000_000)


@given(prices, prices, prices, tokens, tokens, st.data())
def test_pricing_is_exact_and_monotonic(input_price, output_price, cached_price, prompt, completion, data) -> None:
    cached = data.draw(st.integers(0, prompt))
    price = ModelPrice(input_price, output_price, cached_price)
    cost = price.cost(prompt, completion, cached)
    exact = (prompt - cached) * input_price + cached * cached_price + completion * output_price
    assert cost == exact.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)  # the column's 10 places
    assert abs(cost - exact) <= COST_QUANTUM / 2
    assert cost >= 0
    assert price.cost(prompt + 1, completion, cached) >= cost
    assert price.cost(prompt, completion + 1, cached) >= cost


@given(st.integers(0, 80 * 86400))
def test_an_entrys_timestamp_is_fixed_at_sealing(age_s) -> None:
    """Stripe takes 35 days; the timestamp is computed once, from the sealing time, never from a try."""
    sealed_at = START + timedelta(days=90)
    window = sealed_at - timedelta(seconds=age_s)
    (entry,), _ = plan_entries("tn_1", "cus_1", Decimal(1), [COST], [WindowDelta(window, Decimal(1), 1, 1, 0)], {},
                               sealed_at)  # fmt: skip
    assert entry.event_timestamp == event_timestamp(window, sealed_at)
    assert entry.event_timestamp == int(max(window, sealed_at - STRIPE_MAX_AGE).timestamp())
    assert entry.event_timestamp >= int((sealed_at - timedelta(days=35)).timestamp())
