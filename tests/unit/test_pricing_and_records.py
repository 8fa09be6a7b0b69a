"""Pricing in Decimal and the usage record built from LiteLLM's logging payload."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billingproxy.metering import ZERO, ModelPrice, PriceError, PriceTable, UsageRecord
from billingproxy.proxy.payload import record_from_payload
from testkit.support import REPO

PRICES = PriceTable.from_config(REPO / "config.yaml")


def test_prices_are_read_exactly_from_config():
    price = PRICES.get("gpt-4o")
    assert (price.input, price.output, price.cached_input) == (
        Decimal("0.0000025"),
        Decimal("0.00001"),
        Decimal("0.00000125"),
    )
    assert {"demo", "gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash"} <= set(PRICES.models())


def test_cost_bills_cached_tokens_at_their_own_price():
    # 1000 prompt tokens of which 400 cached, 200 completion tokens.
    assert PRICES.cost("gpt-4o", 1000, 200, 400) == Decimal("600") * Decimal("0.0000025") + Decimal("400") * Decimal(
        "0.00000125"
    ) + Decimal("200") * Decimal("0.00001")
    assert PRICES.cost("unknown-model", 10, 10) == 0


def test_a_model_without_a_price_is_a_config_error():
    with pytest.raises(PriceError, match="no pinned input_cost_per_token"):
        PriceTable.from_model_list([{"model_name": "x", "litellm_params": {}, "model_info": {}}])
    with pytest.raises(PriceError, match="non-negative"):
        PriceTable.from_model_list([{"model_name": "x", "model_info": {"input_cost_per_token": -1}}])


PAYLOAD = {
    "litellm_call_id": "call-1",
    "model_group": "gpt-4o",
    "custom_llm_provider": "openai",
    "call_type": "acompletion",
    "status": "success",
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "startTime": 1_800_000_000.25,
    "endTime": 1_800_000_001.5,
    "stream": True,
    "cache_hit": None,
    "messages": [{"role": "user", "content": "secret prompt text"}],
    "metadata": {
        "user_api_key_team_id": "tn_1",
        "user_api_key_auth_metadata": {"tenant_id": "tn_1", "api_key_id": "key_1", "customer_id": "cus_1"},
        "usage_object": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
        "requester_metadata": {"headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
    },
}


def test_record_from_payload_keeps_the_numbers_and_drops_the_text():
    record = record_from_payload(PAYLOAD, PRICES)
    assert record is not None
    assert (record.tenant_id, record.api_key_id, record.customer_id) == ("tn_1", "key_1", "cus_1")
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens, record.reasoning_tokens) == (
        10,
        5,
        4,
        2,
    )
    assert record.cost_usd == PRICES.cost("gpt-4o", 10, 5, 4)
    assert record.latency_ms == 1250 and record.stream and record.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert "secret prompt text" not in record.to_json_line()
    assert UsageRecord.from_json(record.to_json()) == record


def test_failures_and_cache_hits_are_not_billed_and_anonymous_requests_are_skipped():
    failed = record_from_payload({**PAYLOAD, "status": "failure"}, PRICES, status="failure", http_status=500)
    assert failed.cost_usd == 0 and failed.http_status == 500 and failed.status == "failure"
    cached = record_from_payload({**PAYLOAD, "cache_hit": True}, PRICES)
    assert cached.cost_usd == 0 and cached.cache_hit
    assert record_from_payload({**PAYLOAD, "cache_hit": True}, PRICES, bill_cache_hits=True).cost_usd > 0
    assert record_from_payload({**PAYLOAD, "metadata": {}}, PRICES) is None


def test_from_json_rejects_incomplete_records():
    with pytest.raises(ValueError, match="lacks"):
        UsageRecord.from_json({"request_id": "x"})
    with pytest.raises(ValueError, match="unknown usage status"):
        UsageRecord.from_json(
            {"request_id": "x", "tenant_id": "t", "model": "m", "status": "odd", "start_time": "2026-01-01T00:00:00Z"}
        )


def test_the_maximum_cost_counts_every_choice_and_every_image():
    from billingproxy.metering.pricing import IMAGE_TOKEN_BOUND, MAX_CHOICES, max_cost, prompt_token_bound

    prices = PriceTable({"m": ModelPrice(input=Decimal("0.000001"), output=Decimal("0.00001"), cached_input=ZERO)})
    one = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    base = max_cost(prices, "m", one, 4096)
    assert max_cost(prices, "m", {**one, "n": 8}, 4096) - base == 7 * 100 * Decimal("0.00001")
    assert max_cost(prices, "m", {**one, "best_of": 3, "n": 2}, 4096) - base == 2 * 100 * Decimal("0.00001")
    assert max_cost(prices, "m", {**one, "n": 10**9}, 4096) - base == (MAX_CHOICES - 1) * 100 * Decimal("0.00001")
    assert max_cost(prices, "m", {**one, "n": True}, 4096) == base  # not a count
    image = {"type": "image_url", "image_url": {"url": "https://x/1.png"}}
    with_images = {**one, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image, image]}]}
    assert prompt_token_bound(with_images) >= 2 * IMAGE_TOKEN_BOUND
    anthropic = {"type": "image", "source": {"type": "url", "url": "https://x/1.png"}}
    assert prompt_token_bound({"messages": [{"role": "user", "content": [anthropic]}]}) > IMAGE_TOKEN_BOUND


def test_a_referenced_file_is_bounded_by_the_context_window_and_the_window_caps_every_bound():
    from billingproxy.metering.pricing import UNKNOWN_CONTEXT_WINDOW, prompt_token_bound

    def chat(*parts):
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "summarise"}, *parts]}]}

    referenced = [
        {"type": "file", "file": {"file_id": "file-abc"}},  # OpenAI chat
        {"type": "input_file", "file_url": "https://x/report.pdf"},  # Responses API
        {"type": "document", "source": {"type": "url", "url": "https://x/report.pdf"}},  # Anthropic
        {"type": "document", "source": {"type": "file", "file_id": "file_01"}},  # Anthropic Files API
        {"type": "audio_url", "audio_url": {"url": "gs://bucket/call.wav"}},  # LiteLLM
    ]
    for part in referenced:
        assert prompt_token_bound(chat(part), 128_000) == 128_000, part
        assert prompt_token_bound(chat(part)) == UNKNOWN_CONTEXT_WINDOW, part
    inline = [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "A" * 4000}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "A" * 4000}},
    ]
    for part in inline:  # the bytes are in the body: they bound the tokens
        assert 4000 < prompt_token_bound(chat(part), 128_000) < 5000, part
    long = {"messages": [{"role": "user", "content": "word " * 100_000}]}  # 500 KB of text
    assert prompt_token_bound(long) > 500_000 and prompt_token_bound(long, 128_000) == 128_000
