"""End to end through the real proxy with the official openai SDK: auth, callbacks, usage rows."""

from __future__ import annotations

import uuid
from decimal import Decimal

import openai
import pytest

from billingproxy.metering import PriceTable
from testkit.support import REPO, wait_until

PRICES = PriceTable.from_config(REPO / "config.yaml")


def usage_rows(conn, tenant_id: str) -> list[dict]:
    return conn.execute("SELECT * FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time", (tenant_id,)).fetchall()


@pytest.fixture
def tenant_key(store):
    tenant = store.create_tenant(f"e2e-{uuid.uuid4().hex[:12]}", models="gpt-4o,gpt-4o-mini,demo")
    key, token = store.create_key(tenant.id)
    return tenant, key, token


def client(proxy, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)


def test_chat_completion_non_streaming_is_metered(proxy, conn, tenant_key):
    tenant, key, token = tenant_key
    response = client(proxy, token).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three"}], max_tokens=5
    )
    assert response.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert response.usage.prompt_tokens == 3 and response.usage.completion_tokens == 5

    rows = wait_until(lambda: usage_rows(conn, tenant.id), what="usage row")
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["status"], row["api_key_id"]) == ("gpt-4o", "success", key.id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (3, 5, 8)
    assert row["cost_usd"] == 3 * Decimal("0.0000025") + 5 * Decimal("0.00001")
    assert row["stream"] is False


def test_chat_completion_streaming_is_metered(proxy, conn, tenant_key):
    tenant, _, token = tenant_key
    stream = client(proxy, token).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "a b c d"}],
        max_tokens=4,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.split() == ["w0", "w1", "w2", "w3"]

    rows = wait_until(lambda: usage_rows(conn, tenant.id), what="usage row")
    assert len(rows) == 1
    row = rows[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"]) == (4, 4, True)
    assert row["cost_usd"] == 4 * Decimal("0.00000015") + 4 * Decimal("0.0000006")


def test_demo_model_answers_without_a_provider(proxy, tenant_key):
    _, _, token = tenant_key
    response = client(proxy, token).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}]
    )
    assert "BillingProxy" in response.choices[0].message.content
