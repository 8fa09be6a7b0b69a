"""The price book's arithmetic: every dimension, the long-context tier, rate cards, the reservation
bound, the schedule by start time, and LiteLLM's cache-write fields."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billingproxy.errors import InvalidInput
from billingproxy.metering import max_cost, prompt_token_bound, request_dimensions
from billingproxy.prices import PriceBook, PriceVersion, RateCard, TokenUsage, parse_price, request_cost
from billingproxy.prices.model import bound_prices
from billingproxy.proxy.payload import cache_writes

T0 = datetime(2026, 12, 1, tzinfo=UTC)
D = Decimal


def version(id_: int = 1, at: datetime = T0, **kw) -> PriceVersion:
    base = dict(input=D(3), output=D(15), cached_read=D("0.3"), cache_write_5m=D("3.75"), cache_write_1h=D(6))
    return PriceVersion(id_, "claude", at, **{**base, **kw})


def test_every_dimension_is_billed_at_its_own_price():
    usage = TokenUsage(prompt=100, completion=20, cached_read=30, cache_write_5m=10, cache_write_1h=5)
    expected = (55 * D(3) + 30 * D("0.3") + 10 * D("3.75") + 5 * D(6) + 20 * D(15)) / 1_000_000
    assert request_cost(version(), usage) == expected


def test_reasoning_priced_apart_only_when_the_version_says_so():
    usage = TokenUsage(prompt=0, completion=10, reasoning=4)
    assert request_cost(version(), usage) == D(150) / 1_000_000
    assert request_cost(version(reasoning=D(20)), usage) == (6 * D(15) + 4 * D(20)) / 1_000_000


def test_audio_and_image_tokens_are_billed_at_their_own_price_or_as_plain_tokens():
    usage = TokenUsage(prompt=100, completion=20, cached_read=10, input_audio=30, input_image=40, output_audio=5)
    plain = (90 * D(3) + 10 * D("0.3") + 20 * D(15)) / 1_000_000
    assert request_cost(version(), usage) == plain  # no audio / image prices: as before
    priced = version(input_audio=D(40), input_image=D(2), output_audio=D(80), reasoning=D(20))
    expected = (20 * D(3) + 10 * D("0.3") + 30 * D(40) + 40 * D(2) + 15 * D(15) + 5 * D(80)) / 1_000_000
    assert request_cost(priced, usage) == expected
    # Counts beyond what the totals allow are clamped (a buggy upstream never bills more tokens).
    odd = TokenUsage(prompt=10, completion=2, cached_read=4, input_audio=50, input_image=50, output_audio=9)
    assert request_cost(priced, odd) == (4 * D("0.3") + 6 * D(40) + 2 * D(80)) / 1_000_000
    # A multiplier card scales them; the reservation bound covers them.
    card = RateCard(1, "t", None, T0, None, multiplier=D(2))
    assert request_cost(priced, usage, card) == expected * 2
    assert bound_prices(priced, None) == (D(40) / 1_000_000, D(80) / 1_000_000)


def test_long_context_tier_above_the_threshold_scales_cache_prices_like_input():
    v = version(long_context_threshold=100, long_input=D(6), long_output=D("22.5"))
    assert request_cost(v, TokenUsage(prompt=100, completion=1)) == (100 * D(3) + D(15)) / 1_000_000
    tier = request_cost(v, TokenUsage(prompt=101, completion=1, cached_read=1))
    assert tier == (100 * D(6) + D("0.6") + D("22.5")) / 1_000_000


def test_rate_cards_multiply_or_fix_dimensions():
    usage = TokenUsage(prompt=10, completion=10)
    card = RateCard(1, "tn", None, T0, None, multiplier=D("1.2"))
    assert request_cost(version(), usage, card) == (10 * D("3.6") + 10 * D(18)) / 1_000_000
    fixed = RateCard(2, "tn", "claude", T0, None, fixed={"input": D(1)})
    assert request_cost(version(), usage, fixed) == (10 * D(1) + 10 * D(15)) / 1_000_000


def test_the_reservation_bound_is_the_dearest_dimension_of_either_tier():
    v = version(long_context_threshold=100, long_input=D(6), long_output=D("22.5"))
    per_in, per_out = bound_prices(v, None)
    assert (per_in, per_out) == (D(12) / 1_000_000, D("22.5") / 1_000_000)  # 1-hour write in the tier


def test_the_reservation_bound_counts_only_the_dimensions_the_request_can_incur():
    v = version(long_context_threshold=10_000, long_input=D(6), long_output=D("22.5"), input_audio=D(40))
    v = replace(v, output_audio=D(80), input_image=D(5))
    text = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    plain = request_dimensions(text, "acompletion")
    assert not (plain.cache_write or plain.cache_write_1h or plain.input_audio or plain.input_image)
    assert bound_prices(v, None, plain) == (D(3) / 1_000_000, D(15) / 1_000_000)  # no tier: prompt ≤ 10,000
    marked = {**text, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]}
    assert bound_prices(v, None, request_dimensions(marked, "acompletion"))[0] == D("3.75") / 1_000_000
    hour = {**text, "tools": [{"name": "t", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}
    assert bound_prices(v, None, request_dimensions(hour, "acompletion"))[0] == D(6) / 1_000_000
    top = {**text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}  # a whole-request marker
    assert bound_prices(v, None, request_dimensions(top, "anthropic_messages"))[0] == D(6) / 1_000_000
    injected = request_dimensions(text, "acompletion", injects_cache_control=True)
    assert bound_prices(v, None, injected)[0] == D(6) / 1_000_000
    audio = {**text, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    assert bound_prices(v, None, request_dimensions(audio, "acompletion"))[0] == D(40) / 1_000_000
    image = {**text, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    assert bound_prices(v, None, request_dimensions(image, "acompletion"))[0] == D(5) / 1_000_000
    speaking = {**text, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    assert bound_prices(v, None, request_dimensions(speaking, "acompletion"))[1] == D(80) / 1_000_000
    long = {**text, "messages": [{"role": "user", "content": "x" * 20_000}]}  # the prompt bound passes 10,000
    assert bound_prices(v, None, request_dimensions(long, "acompletion")) == (D(6) / 1_000_000, D("22.5") / 1_000_000)
    # An unknown route, or no dimensions at all: every dimension, as before.
    assert request_dimensions(text, "allm_passthrough_route").cache_write_1h
    assert bound_prices(v, None) == bound_prices(v, None, request_dimensions(text, "allm_passthrough_route"))
    # The book's cached bounds keep requests apart, and the amount is the bound times the body's bound.
    book = PriceBook([v], [])
    prices = book.for_tenant(None, T0 + timedelta(hours=1))
    assert prices.get("claude", plain).input == D(3) / 1_000_000
    assert prices.get("claude", request_dimensions(hour, "acompletion")).input == D(6) / 1_000_000
    assert prices.get("claude").input == D(40) / 1_000_000 * 2  # the long tier's audio price: all dimensions
    expected = prompt_token_bound(text) * D(3) / 1_000_000 + 5 * D(15) / 1_000_000
    assert max_cost(prices, "claude", text, 4096, plain) == expected


def test_the_schedule_prices_by_start_time_and_cards_by_their_period():
    later = T0 + timedelta(hours=1)
    card = RateCard(7, "tn", None, later, later + timedelta(hours=1), multiplier=D(2))
    book = PriceBook([version(1, T0), version(2, later, input=D(4))], [card])
    usage = TokenUsage(prompt=1)
    assert book.cost("claude", usage, at=T0 - timedelta(seconds=1)) == (D(0), None)
    assert book.cost("claude", usage, at=later - timedelta(microseconds=1), tenant_id="tn") == (D("0.000003"), 1)
    assert book.cost("claude", usage, at=later, tenant_id="tn") == (D("0.000008"), 2)
    assert book.cost("claude", usage, at=later + timedelta(hours=1), tenant_id="tn") == (D("0.000004"), 2)
    assert book.for_tenant("tn", later).get("claude").input == D(12) / 1_000_000  # 2 x the 1-hour write
    assert book.for_tenant("tn", later).get("other") is None


def test_litellm_cache_write_fields():
    usage = {
        "cache_creation_input_tokens": 10,
        "prompt_tokens_details": {"cache_creation_token_details": {"ephemeral_1h_input_tokens": 4}},
    }
    assert cache_writes(usage) == (6, 4)
    assert cache_writes({"cache_creation_input_tokens": 7}) == (7, 0)
    assert cache_writes({"cache_creation_input_tokens": 7, "cache_creation": {"ephemeral_1h_input_tokens": 7}}) == (
        0,
        7,
    )
    assert cache_writes({}) == (0, 0)


@pytest.mark.parametrize("bad", ["-1", "abc", "1e400", "NaN", "0.00000000001", True])
def test_operator_prices_are_exact_or_refused(bad):
    with pytest.raises(InvalidInput):
        parse_price(bad, "input price")


def test_exact_prices_are_kept_exactly():
    assert parse_price("2.50", "p") == D("2.50") and parse_price(0.1, "p") == D("0.1")


def test_the_provisional_book_from_config_has_every_imported_dimension():
    """Without the database at start, config.yaml bills as `db migrate` would import it."""
    from pathlib import Path

    book = PriceBook.from_config(Path(__file__).parents[2] / "config.yaml")
    audio = TokenUsage(prompt=10, completion=4, input_audio=6, output_audio=3)
    expected = (4 * D("2.5") + 6 * 40 + 10 + 3 * 80) / 1_000_000
    assert book.cost("gpt-4o-audio-preview", audio, at=T0) == (expected, None)
    writes = TokenUsage(prompt=10, completion=0, cache_write_5m=4, cache_write_1h=2)
    cost, version_id = book.cost("claude-sonnet-4", writes, at=T0)
    assert (cost, version_id) == ((4 * D(3) + 4 * D("3.75") + 2 * D(6)) / 1_000_000, None)
