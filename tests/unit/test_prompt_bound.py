"""The budget's prompt bound counted with the model's own tokenizer (issue 17): still an upper
bound on what the provider bills, and much tighter than the byte bound."""

from __future__ import annotations

import pytest

from bench.prompt_bound import point_tiktoken_at_litellm
from billingproxy.metering import prompt_token_bound
from billingproxy.metering.pricing import EXACT_COUNT_CHARS, IMAGE_TOKEN_BOUND
from billingproxy.metering.tokenizer import encoding_for_model, exact_counter, load_encodings
from billingproxy.proxy.catalog import ModelCatalog, ModelEntry


@pytest.fixture(scope="module")
def count():
    point_tiktoken_at_litellm()
    load_encodings({"o200k_base"})
    counter = exact_counter("o200k_base")
    assert counter is not None, "LiteLLM's bundled o200k_base did not load"
    return counter


def openai_billed(messages: list[dict], count) -> int:
    """What OpenAI bills for a chat prompt of plain text messages: the cookbook's formula
    ("How to count tokens with tiktoken": 3 per message, 1 per name, 3 to prime the reply)."""
    total = 3
    for message in messages:
        total += 3 + count(message["role"])
        content = message["content"]
        texts = [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]
        total += sum(count(text) for text in texts)
        total += 1 + count(message["name"]) if "name" in message else 0
    return total


PROMPTS = [
    "hi",
    "Please summarise the quarterly report and list the three largest cost drivers.\n" * 40,
    "Zusammenfassung: Übersicht über die Größenordnung — 日本語のテキストも含まれます。🙂" * 20,
    'def f(x):\n    return {"a": [1, 2, 3], "b": x ** 2}  # code\n' * 30,
    "<|endoftext|> is text here, not a special token " * 5,
]


@pytest.mark.parametrize("text", PROMPTS, ids=["short", "english", "mixed scripts", "code", "special"])
def test_the_counted_bound_is_at_least_what_openai_bills_and_at_most_the_byte_bound(text, count):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": text}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": text},
    ]
    body = {"messages": messages}
    counted = prompt_token_bound(body, count=count)
    assert openai_billed(messages, count) <= counted <= prompt_token_bound(body)


def test_english_is_bounded_about_four_times_tighter_than_by_bytes(count):
    body = {"messages": [{"role": "user", "content": PROMPTS[1]}]}
    assert prompt_token_bound(body) > 3.5 * prompt_token_bound(body, count=count)


def test_text_beyond_the_counted_share_falls_back_to_bytes(count):
    long_text = "word " * (EXACT_COUNT_CHARS // 5 + 100)  # longer than the share: counted by bytes
    body = {"messages": [{"role": "user", "content": "short"}, {"role": "user", "content": long_text}]}
    assert prompt_token_bound(body, count=count) >= len(long_text.encode())


def test_tools_tool_calls_and_inline_audio_stay_bounded_by_their_bytes_and_images_by_the_per_image_bound(count):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    audio = {"type": "input_audio", "input_audio": {"data": "A" * 4000, "format": "wav"}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "B" * 50_000}}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"}, audio, image]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": tools,
    }
    counted = prompt_token_bound(body, count=count)
    assert counted >= 4000 + IMAGE_TOKEN_BOUND  # the audio's bytes and one image's maximum
    assert counted < 50_000  # an inline image counts at its per-image maximum, not its base64 size


def test_only_openai_models_tiktoken_knows_get_an_exact_tokenizer():
    assert encoding_for_model("openai/gpt-4o-mini") == "o200k_base"
    assert encoding_for_model("openai/text-embedding-3-small") == "cl100k_base"
    assert encoding_for_model("anthropic/claude-sonnet-4-20250514") is None  # another tokenizer
    assert encoding_for_model("openai/llama-3-70b") is None  # an OpenAI-compatible server: unknown
    catalog = ModelCatalog(
        [
            ModelEntry("mixed", "openai/gpt-4o", ()),
            ModelEntry("mixed", "vertex_ai/gemini-2.0-flash-001", ()),
            ModelEntry("gpt", "openai/gpt-4o", ()),
        ]
    )
    assert catalog.encodings == {"mixed": None, "gpt": "o200k_base"}  # one deployment without: bytes
