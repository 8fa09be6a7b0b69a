"""The client contract the SDKs rely on (issue 19), each point with the SDK that relies on it,
through the real proxy: `_request_id` names the row, a budget refusal is not retried."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anthropic
import httpx
import openai
import pytest

from billingproxy.proxy.contract import budget_refusal_headers, period_reset
from testkit.support import wait_until


def rows_of(conn, tenant_id: str) -> list[dict]:
    return conn.execute("SELECT * FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time", (tenant_id,)).fetchall()


@pytest.fixture
def tenant_token(store):
    tenant = store.create_tenant(f"contract-{uuid.uuid4().hex[:10]}")
    return tenant, store.create_key(tenant.id)[1]


def test_openai_request_id_is_the_rows_request_id(proxy, conn, tenant_token):
    tenant, token = tenant_token
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    response = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        extra_headers={"x-request-id": "mine"},
    )
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    stream_id = stream.headers["x-request-id"]
    assert [chunk for chunk in stream.parse()]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], user="bad user")
    rows = wait_until(lambda: (found := rows_of(conn, tenant.id)) and len(found) == 3 and found, what="3 rows")
    ids = {row["request_id"]: row for row in rows}
    assert response._request_id in ids and ids[response._request_id]["client_request_id"] == "mine"
    assert ids[stream_id]["stream"] is True
    assert ids[refused.value.request_id]["status"] == "rejected"


def test_anthropic_request_id_is_the_rows_request_id(proxy, conn, tenant_token):
    tenant, token = tenant_token
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-4", max_tokens=5, messages=[{"role": "user", "content": "hello there"}]
    )
    rows = wait_until(lambda: rows_of(conn, tenant.id), what="row")
    assert message._request_id == rows[0]["request_id"]


def test_a_budget_refusal_is_not_retried_by_the_openai_sdk_default(proxy, conn, store):
    """openai's default max_retries (2) retries a 429 unless x-should-retry: false says not to."""
    tenant = store.create_tenant(f"broke-{uuid.uuid4().hex[:8]}", budget_usd="0.000001", budget_period="daily")
    token = store.create_key(tenant.id)[1]
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token)  # default retries
    assert client.max_retries == 2
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=1000,
            extra_headers={"x-request-id": "first"},
        )
    headers = caught.value.response.headers
    assert caught.value.code == "budget_exceeded"
    assert headers["x-should-retry"] == "false"
    until_midnight = (period_reset("daily") - datetime.now(UTC)).total_seconds()
    assert 0 < int(headers["retry-after"]) <= until_midnight + 5
    # A second refused request, sent after: once its row is stored, the first request's are too.
    once = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        once.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "second"}
        )
    rows = wait_until(
        lambda: (
            (found := rows_of(conn, tenant.id)) and any(r["client_request_id"] == "second" for r in found) and found
        ),
        what="the second refusal's row",
    )
    first = [r for r in rows if r["client_request_id"] == "first"]
    assert [(r["status"], r["http_status"], r["cost_usd"]) for r in first] == [("rejected", 429, 0)]


def test_retry_after_counts_to_the_period_reset():
    now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    assert budget_refusal_headers("daily", now) == {"x-should-retry": "false", "retry-after": "30"}
    assert budget_refusal_headers("monthly", now)["retry-after"] == "30"  # December → January
    assert budget_refusal_headers("total", now) == {"x-should-retry": "false"}  # never resets


def test_anthropic_count_tokens_is_open_to_tenant_tokens_and_not_billed(proxy, conn, tenant_token):
    tenant, token = tenant_token
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    counted = client.messages.count_tokens(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "count these few words please"}]
    )
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=proxy.url, api_key="sk-bp-wrong", max_retries=0).messages.count_tokens(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "x"}]
        )
    # Not billed: a metered request after it is the tenant's only row.
    client.messages.create(model="claude-sonnet-4", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    rows = wait_until(
        lambda: (found := rows_of(conn, tenant.id)) and any(r["completion_tokens"] == 2 for r in found) and found,
        what="the messages row",
    )
    assert len(rows) == 1 and rows[0]["model"] == "claude-sonnet-4"


def test_anthropic_count_tokens_checks_the_allow_list_and_the_key_rpm(proxy, store):
    """LiteLLM runs no pre-call hook for count_tokens: our auth checks the model and the RPM."""
    tenant = store.create_tenant(f"count-{uuid.uuid4().hex[:8]}", models="claude-sonnet-4")
    token = store.create_key(tenant.id, rpm_limit=3)[1]
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    words = [{"role": "user", "content": "count these"}]
    with pytest.raises(anthropic.PermissionDeniedError, match="not allowed"):
        client.messages.count_tokens(model="gpt-4o-mini", messages=words)
    for _ in range(3):
        assert client.messages.count_tokens(model="claude-sonnet-4", messages=words).input_tokens > 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.count_tokens(model="claude-sonnet-4", messages=words)
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 61
    # Counted apart from inference: the key's 3 requests a minute still serve a message.
    client.messages.create(model="claude-sonnet-4", max_tokens=2, messages=[{"role": "user", "content": "hi"}])


def test_a_json_body_without_content_type_is_handled_as_json(proxy, conn, store):
    """Never a 403 "model 'None' is not allowed" (the tenant has an allow-list): LiteLLM 1.106
    reads the body as JSON; a body it could not read gets our 400 naming Content-Type
    (contract.check_body_read, unit-tested)."""
    tenant = store.create_tenant(f"ctype-{uuid.uuid4().hex[:8]}", models="gpt-4o")
    token = store.create_key(tenant.id)[1]
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    response = httpx.post(
        proxy.url + "/v1/chat/completions", content=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert "content-type" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 200, response.text
    rows = wait_until(lambda: rows_of(conn, tenant.id), what="row")
    assert [(r["model"], r["status"], r["request_id"]) for r in rows] == [
        ("gpt-4o", "success", response.headers["x-request-id"])
    ]


def test_refusals_on_the_anthropic_route_are_anthropic_shaped_and_not_retried(proxy, conn, store):
    tenant = store.create_tenant(f"an-broke-{uuid.uuid4().hex[:8]}", budget_usd="0.000001", budget_period="daily")
    token = store.create_key(tenant.id)[1]
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token)  # default retries (2)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-sonnet-4", max_tokens=5, messages=messages, metadata={"user_id": "a b"})
    assert bad.value.body["type"] == "error" and "metadata.user_id" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.RateLimitError) as broke:
        client.messages.create(
            model="claude-sonnet-4", max_tokens=1000, messages=messages, extra_headers={"x-request-id": "an-first"}
        )
    assert broke.value.body["type"] == "error" and broke.value.response.headers["x-should-retry"] == "false"
    rows = wait_until(
        lambda: (found := rows_of(conn, tenant.id)) and len(found) >= 2 and found, what="the two refusals' rows"
    )
    assert sorted((r["http_status"], r["status"]) for r in rows) == [(400, "rejected"), (429, "rejected")]
