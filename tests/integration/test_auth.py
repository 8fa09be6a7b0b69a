"""Tenant tokens through the real proxy: who gets in, who is refused and how, and how fast it changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from testkit.support import GATEWAY_TENANT, GATEWAY_TOKEN, MASTER_KEY, wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 2}


def post_chat(proxy, token: str | None, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    return httpx.post(proxy.url + "/v1/chat/completions", json=body or CHAT, headers=hdrs, timeout=30)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code, error
    return error


@pytest.fixture
def tenant(store):
    return store.create_tenant(f"auth-{uuid.uuid4().hex[:8]}", models="gpt-4o-mini,text-embedding-3-small")


@pytest.fixture
def token(store, tenant) -> str:
    return store.create_key(tenant.id)[1]


def test_valid_token_gets_a_completion_with_the_openai_sdk(proxy, token):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    response = client.chat.completions.create(**CHAT)
    assert response.choices[0].message.content == "w0 w1"


def test_missing_and_unknown_tokens_get_401(proxy):
    assert_openai_error(post_chat(proxy, None), 401, "missing_api_key")
    assert_openai_error(post_chat(proxy, "sk-bp-" + "x" * 43), 401, "invalid_api_key")
    # The SDK surfaces it as an AuthenticationError.
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-bp-unknown", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)


def test_authorization_header_without_bearer_scheme_is_refused(proxy):
    response = post_chat(proxy, None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("invalid_api_key", "missing_api_key")


def test_revoked_key_is_refused_within_the_cache_ttl(proxy, store, tenant):
    key, token = store.create_key(tenant.id)
    assert post_chat(proxy, token).status_code == 200  # now cached as valid
    store.revoke_key(key.id)
    # TTL is 1 s in the test proxy: the refusal must arrive within a few TTLs.
    wait_until(lambda: post_chat(proxy, token).status_code == 401, timeout=5, interval=0.2, what="revocation")
    assert_openai_error(post_chat(proxy, token), 401, "invalid_api_key")


def test_expired_key_is_refused(proxy, store, tenant):
    _, token = store.create_key(tenant.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    error = assert_openai_error(post_chat(proxy, token), 401, "invalid_api_key")
    assert "expired" in error["message"]


def test_rotated_key_keeps_working_during_grace_then_expires(proxy, store, tenant):
    old_key, old_token = store.create_key(tenant.id)
    new_key, new_token, old_after = store.rotate_key(old_key.id, grace=timedelta(seconds=2))
    assert new_key.tenant_id == tenant.id and new_key.id != old_key.id
    assert old_after.expires_at is not None
    assert post_chat(proxy, old_token).status_code == 200
    assert post_chat(proxy, new_token).status_code == 200
    wait_until(lambda: post_chat(proxy, old_token).status_code == 401, timeout=10, interval=0.3, what="grace end")
    assert post_chat(proxy, new_token).status_code == 200


def test_suspended_tenant_gets_403_and_resume_restores_access(proxy, store, tenant, token):
    assert post_chat(proxy, token).status_code == 200
    store.set_status(tenant.id, "suspended")
    wait_until(lambda: post_chat(proxy, token).status_code == 403, timeout=5, interval=0.2, what="suspension")
    assert_openai_error(post_chat(proxy, token), 403, "tenant_suspended")
    store.set_status(tenant.id, "active")
    wait_until(lambda: post_chat(proxy, token).status_code == 200, timeout=5, interval=0.2, what="resume")


def test_model_outside_the_allow_list_gets_403_naming_it(proxy, token, upstream):
    before = upstream.calls["/v1/chat/completions"]
    response = post_chat(proxy, token, {**CHAT, "model": "gpt-4o"})
    error = assert_openai_error(response, 403, "model_not_allowed")
    assert "gpt-4o" in error["message"]
    assert upstream.calls["/v1/chat/completions"] == before  # refused before any upstream call


def test_models_endpoint_lists_only_the_tenants_models(proxy, token):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["gpt-4o-mini", "text-embedding-3-small"]


def test_tenant_without_allow_list_may_use_every_model(proxy, store):
    open_tenant = store.create_tenant(f"open-{uuid.uuid4().hex[:8]}")
    _, token = store.create_key(open_tenant.id)
    assert post_chat(proxy, token, {**CHAT, "model": "gpt-4o"}).status_code == 200


def test_admin_master_key_is_accepted(proxy):
    assert post_chat(proxy, MASTER_KEY, {**CHAT, "model": "gpt-4o"}).status_code == 200
    models = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4"} <= {m["id"] for m in models["data"]}


def test_static_gateway_token_maps_to_the_configured_tenant(proxy, store, conn):
    try:
        tenant = store.get_tenant(GATEWAY_TENANT)
    except LookupError:
        tenant = store.create_tenant(GATEWAY_TENANT)
    response = post_chat(proxy, GATEWAY_TOKEN)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-litellm-call-id"]
    row = wait_until(
        lambda: conn.execute("SELECT tenant_id FROM litellm_usage WHERE request_id = %s", (request_id,)).fetchone(),
        what="gateway usage row",
    )
    assert row["tenant_id"] == tenant.id


def test_no_raw_token_in_proxy_output_or_usage_rows(proxy, conn, token, tenant):
    response = post_chat(proxy, token)
    assert response.status_code == 200
    post_chat(proxy, token + "tampered")  # a refused attempt must not log the token either
    request_id = response.headers["x-litellm-call-id"]
    wait_until(
        lambda: conn.execute("SELECT 1 FROM litellm_usage WHERE request_id = %s", (request_id,)).fetchone(),
        what="usage row",
    )
    output = proxy.output()
    assert token not in output and token[6:] not in output
    rows = conn.execute("SELECT * FROM litellm_usage WHERE tenant_id = %s", (tenant.id,)).fetchall()
    assert rows and all(token not in str(row) for row in rows)
    keys = conn.execute("SELECT * FROM api_keys WHERE tenant_id = %s", (tenant.id,)).fetchall()
    assert all(token not in str(row) for row in keys)
