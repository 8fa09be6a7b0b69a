"""The usage read from a response before it leaves the proxy, in every shape LiteLLM hands the
post-call hook: the record made from it must equal the one LiteLLM's logging would make."""

from __future__ import annotations

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
