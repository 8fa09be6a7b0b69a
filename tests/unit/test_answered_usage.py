"""The usage read from a response before it leaves the proxy, in every shape LiteLLM hands the
post-call hook: the record made from it must equal the one LiteLLM's logging would make."""

from __future__ import annotations

from billingproxy.proxy import answered, inflight
from billingproxy.proxy.answered import usage_dict


def test_anthropic_messages_usage_counts_cache_reads_and_writes_into_the_prompt():
    usage = {
        "input_tokens": 7,  # Anthropic: without the cache reads and writes
        "output_tokens": 5,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 4},
    }
    got = usage_dict(usage, "anthropic_messages")
    assert (got["prompt_tokens"], got["completion_tokens"], got["total_tokens"]) == (20, 5, 25)
    details = got["prompt_tokens_details"]
    assert (details["cached_tokens"], details["cache_creation_tokens"]) == (3, 10)
    assert details["cache_creation_token_details"] == {"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 4}


def test_responses_api_usage_keeps_cached_tokens_inside_the_input():
    usage = {
        "input_tokens": 20,  # OpenAI's Responses API: the cached ones included
        "output_tokens": 9,
        "total_tokens": 29,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens_details": {"reasoning_tokens": 2},
    }
    got = usage_dict(usage, "aresponses")
    assert (got["prompt_tokens"], got["completion_tokens"], got["total_tokens"]) == (20, 9, 29)
    assert got["prompt_tokens_details"]["cached_tokens"] == 4
    assert got["completion_tokens_details"]["reasoning_tokens"] == 2


def test_an_input_output_shape_of_another_call_type_is_left_to_the_logging_callback():
    assert usage_dict({"input_tokens": 1, "output_tokens": 1}, "acompletion") == {}
    assert usage_dict({"input_tokens": 1, "output_tokens": 1}, None) == {}
    assert usage_dict(None, "anthropic_messages") == {}


def test_a_request_cut_before_the_call_starts_when_it_was_admitted():
    """LiteLLM's logging object has no start time before the provider call: the admission time stands in."""
    data = {"litellm_call_id": "cut-early", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    inflight.begin("cut-early", data, {"tenant_id": "tn_cut"})
    admitted = inflight.admitted_at("cut-early")
    assert admitted is not None
    usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
    payload = answered.payload_of_response(
        data, None, usage=usage, hidden=None, stream=False, end_time=admitted + 1.5, start_time=admitted
    )
    assert payload["startTime"] == admitted and payload["endTime"] - payload["startTime"] == 1.5
    inflight.end("cut-early")
    assert inflight.admitted_at("cut-early") is None
