"""Reading Anthropic's stream events for metering (issue 17): usage from message_start completed
by message_delta, and the relayed text, however the bytes are split into chunks."""

from __future__ import annotations

import json

import pytest

from billingproxy.proxy import answered
from billingproxy.proxy.streaming import StreamState

START_USAGE = {
    "input_tokens": 12,
    "output_tokens": 1,
    "cache_read_input_tokens": 3,
    "cache_creation_input_tokens": 4,
    "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
}
EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "usage": START_USAGE}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm, "}},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "wörld 🙂"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"q": 1'}},
    {"type": "ping"},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 21}},
    {"type": "message_stop"},
]
WIRE = "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n" for e in EVENTS).encode()


@pytest.mark.parametrize("size", [len(WIRE), 97, 7, 1], ids=["one chunk", "97 bytes", "7 bytes", "byte by byte"])
def test_usage_and_text_are_read_whatever_the_chunking(size):
    state = StreamState()
    for start in range(0, len(WIRE), size):
        state.see(WIRE[start : start + size])
    assert state.pieces == ["hmm, ", "Hello ", "wörld 🙂", '{"q": 1']
    assert state.call_type == "anthropic_messages"
    usage = answered.usage_dict(state.usage, state.call_type)
    # Anthropic's input_tokens excludes cache reads and writes; the row's prompt includes them.
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (12 + 3 + 4, 21)
    assert usage["prompt_tokens_details"]["cache_creation_token_details"]["ephemeral_5m_input_tokens"] == 4


def test_a_stream_cut_before_message_delta_has_no_provider_usage():
    state = StreamState()
    cut = WIRE[: WIRE.index(b"event: message_delta")]
    state.see(cut)
    assert state.usage is None  # the record is an estimate, counted from the pieces
    assert len(state.pieces) == 4
