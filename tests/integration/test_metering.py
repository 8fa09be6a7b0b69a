"""Exactly one usage row per request, with exact tokens and cost, across every endpoint kind."""

from __future__ import annotations

import uuid
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from testkit.support import wait_until

# The pinned prices from config.yaml, written out independently (per token, USD).
PRICE = {
    "gpt-4o": (Decimal("0.0000025"), Decimal("0.00001"), Decimal("0.00000125")),
    "gpt-4o-mini": (Decimal("0.00000015"), Decimal("0.0000006"), Decimal("0.000000075")),
    "text-embedding-3-small": (Decimal("0.00000002"), Decimal("0"), Decimal("0.00000002")),
    "claude-sonnet-4": (Decimal("0.000003"), Decimal("0.000015"), Decimal("0.0000003")),
}


def expected_cost(model: str, prompt: int, completion: int, cached: int = 0) -> Decimal:
    input_price, output_price, cached_price = PRICE[model]
    return (prompt - cached) * input_price + cached * cached_price + completion * output_price


@pytest.fixture
def tenant_token(store):
    tenant = store.create_tenant(f"meter-{uuid.uuid4().hex[:8]}")
    return tenant, store.create_key(tenant.id)[1]


def rows_for(conn, tenant_id: str) -> dict[str, dict]:
    rows = conn.execute("SELECT * FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)).fetchall()
    return {row["request_id"]: row for row in rows}


def test_mixed_requests_produce_exactly_one_exact_row_each(proxy, conn, tenant_token):
    tenant, token = tenant_token
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    expected: dict[str, dict] = {}  # request id -> the row we expect

    def expect(request_id: str, model: str, status: str, prompt=0, completion=0, cached=0, stream=False, **extra):
        cost = expected_cost(model, prompt, completion, cached) if status == "success" else Decimal(0)
        expected[request_id] = dict(
            model=model,
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            total_tokens=prompt + completion,
            cost_usd=cost,
            stream=stream,
            **extra,
        )

    # 1. chat, non-streaming (5 words in, 7 out)
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four five"}], max_tokens=7
    )
    expect(raw.headers["x-litellm-call-id"], "gpt-4o", "success", 5, 7)

    # 2. chat with cached prompt tokens and reasoning tokens reported by the provider
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "a b c d e f g h [[cached:4]] [[reasoning:2]]"}],
        max_tokens=3,
    )
    expect(raw.headers["x-litellm-call-id"], "gpt-4o", "success", 10, 3, cached=4, reasoning_tokens=2)

    # 3. chat, streaming
    with oa.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x y z"}], max_tokens=6, stream=True
    ) as response:
        request_id = response.headers["x-litellm-call-id"]
        assert "w5" in "".join(response.iter_lines())
    expect(request_id, "gpt-4o-mini", "success", 3, 6, stream=True)

    # 4. embeddings
    raw = oa.embeddings.with_raw_response.create(model="text-embedding-3-small", input="embed these four words")
    expect(raw.headers["x-litellm-call-id"], "text-embedding-3-small", "success", 4, 0)

    # 5. legacy completions
    raw = oa.completions.with_raw_response.create(model="gpt-4o-mini", prompt="complete me please", max_tokens=2)
    expect(raw.headers["x-litellm-call-id"], "gpt-4o-mini", "success", 3, 2)

    # 6. responses API
    raw = oa.responses.with_raw_response.create(model="gpt-4o", input="respond to this", max_output_tokens=20)
    expect(raw.headers["x-litellm-call-id"], "gpt-4o", "success", 3, 20)

    # 7. Anthropic-style /v1/messages with the anthropic SDK
    an = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    raw = an.messages.with_raw_response.create(
        model="claude-sonnet-4", max_tokens=5, messages=[{"role": "user", "content": "hello claude friend"}]
    )
    assert raw.parse().content[0].text == "w0 w1 w2 w3 w4"
    expect(raw.headers["x-litellm-call-id"], "claude-sonnet-4", "success", 3, 5)

    # 8-10. upstream failures: 500, 429, timeout (the test proxy's timeout is 5 s)
    for fault, error_class, status in (
        ("500", openai.InternalServerError, 500),
        ("429", openai.RateLimitError, 429),
        ("timeout", openai.APIStatusError, 408),
    ):
        with pytest.raises(error_class) as caught:
            oa.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"[[fault:{fault}]]"}], max_tokens=2
            )
        response = getattr(caught.value, "response", None)
        if response is not None:
            expect(response.headers["x-litellm-call-id"], "gpt-4o-mini", "failure", http_status=status)
        else:  # the SDK gave up waiting; find the row by its status below
            expected[f"timeout-{fault}"] = {"model": "gpt-4o-mini", "status": "failure"}

    # 11. a stream the provider breaks mid-way
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream = oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "[[fault:broken_stream]]"}],
            max_tokens=5,
            stream=True,
        )
        for _ in stream:
            pass
    expected["broken-stream"] = {"model": "gpt-4o-mini", "status": "failure", "stream": True}

    rows = wait_until(
        lambda: (found := rows_for(conn, tenant.id)) and len(found) >= len(expected) and found,
        timeout=30,
        what=f"{len(expected)} usage rows",
    )
    assert len(rows) == len(expected), sorted(r["status"] for r in rows.values())
    for request_id, want in expected.items():
        if request_id not in rows:
            continue  # failures whose id the client never saw are checked in aggregate below
        row = rows.pop(request_id)
        for field, value in want.items():
            assert row[field] == value, (request_id, field, row[field], value)
    # What is left are the timeout/broken-stream failures: billed at zero.
    leftovers = sorted((r["status"], r["cost_usd"], r["stream"]) for r in rows.values())
    assert leftovers == [("failure", 0, True)], leftovers  # the broken stream: a failure, not billed
    # The rollup agrees with the rows.
    total = conn.execute(
        "SELECT sum(cost_usd) AS c, sum(requests) AS n FROM usage_daily WHERE tenant_id = %s", (tenant.id,)
    ).fetchone()
    assert total["n"] == len(expected)
    assert total["c"] == sum(w.get("cost_usd", Decimal(0)) for w in expected.values())
