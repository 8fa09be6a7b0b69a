"""Bad input through the real proxy: every case gets a 4xx OpenAI-style JSON error, the proxy
stays up, nothing reaches the provider, nothing is billed, nothing leaks."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billingproxy import db
from billingproxy.tenants import TenantStore

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def hostile_tenant(database_url: str) -> tuple[str, str]:
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"hostile-{uuid.uuid4().hex[:8]}", budget_usd="5")
        _, token = store.create_key(tenant.id)
    return tenant.id, token


def json_body(data) -> bytes:
    return json.dumps(data).encode()


# (case, body bytes, extra headers, path)
CASES = [
    ("malformed JSON", b'{"model": "gpt-4o-mini", "messages": [', {}, "/v1/chat/completions"),
    ("not an object", b"[1, 2, 3]", {}, "/v1/chat/completions"),
    (
        "wrong content-type",
        b"model=gpt-4o-mini&messages=hi",
        {"Content-Type": "application/x-www-form-urlencoded"},
        None,
    ),
    ("missing messages", json_body({"model": "gpt-4o-mini"}), {}, None),
    ("messages wrong type", json_body({"model": "gpt-4o-mini", "messages": "hello"}), {}, None),
    ("message content a number", json_body({**GOOD, "messages": [{"role": "user", "content": 5}]}), {}, None),
    ("content parts not objects", json_body({**GOOD, "messages": [{"role": "user", "content": ["a"]}]}), {}, None),
    ("message role a number", json_body({**GOOD, "messages": [{"role": 5, "content": "hi"}]}), {}, None),
    ("tools a string", json_body({**GOOD, "tools": "x"}), {}, None),
    ("tools a number", json_body({**GOOD, "tools": 5}), {}, None),
    ("body a JSON string", b'"hello"', {}, None),
    ("missing model", json_body({"messages": GOOD["messages"]}), {}, None),
    ("unknown model", json_body({**GOOD, "model": "gpt-does-not-exist"}), {}, None),
    ("negative max_tokens", json_body({**GOOD, "max_tokens": -5}), {}, None),
    ("huge max_tokens", json_body({**GOOD, "max_tokens": 10**15}), {}, None),
    ("string max_tokens", json_body({**GOOD, "max_tokens": "many"}), {}, None),
    (
        "body over the size limit",
        json_body({**GOOD, "messages": [{"role": "user", "content": "x" * 9_000_000}]}),
        {},
        None,
    ),
    ("invalid UTF-8", b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}', {}, None),
    ("Authorization without Bearer", json_body(GOOD), {"Authorization": "TOKEN"}, None),
    ("no Authorization", json_body(GOOD), {"Authorization": ""}, None),
    ("unknown token", json_body(GOOD), {"Authorization": "Bearer sk-bp-" + "0" * 43}, None),
]


def upstream_calls(upstream) -> int:
    return sum(upstream.calls.values())


# LiteLLM's own auth (pre_db_read_auth_checks) calls .get() on the parsed body before any plugin
# runs, and its auth-error handler does it again, so a body that is not a JSON object is a 500 no
# plugin can intercept; a number as "tools" fails in LiteLLM's request setup, also before our
# hook. Kept as strict xfails: they turn red the day LiteLLM fixes them, so this note can go.
LITELLM_500 = pytest.mark.xfail(strict=True, reason="LiteLLM 1.106.2 answers this with a 500 before any plugin")
BEFORE_PLUGINS = {"not an object", "body a JSON string", "tools a number"}
CASES = [pytest.param(*c, id=c[0], marks=[LITELLM_500] if c[0] in BEFORE_PLUGINS else []) for c in CASES]


@pytest.mark.parametrize("case,body,headers,path", CASES)
def test_bad_input_gets_a_json_4xx_and_bills_nothing(
    proxy, upstream, database_url, hostile_tenant, case, body, headers, path
) -> None:
    tenant_id, token = hostile_tenant
    before = upstream_calls(upstream)
    sent_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    sent_headers = {k: v for k, v in sent_headers.items() if v}
    response = httpx.post(proxy.url + (path or "/v1/chat/completions"), content=body, headers=sent_headers, timeout=60)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert token not in response.text and "Traceback" not in response.text
    assert upstream_calls(upstream) == before  # the provider never saw it
    assert httpx.get(proxy.url + "/health/liveliness", timeout=10).status_code == 200
    with db.connect(database_url) as conn:
        billed = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS cost FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()["cost"]
    assert billed == 0


def test_very_long_header_is_refused_and_the_proxy_stays_up(proxy, hostile_tenant) -> None:
    """Refused by the HTTP server (h11's header limit) before any of our code runs."""
    _, token = hostile_tenant
    headers = {"Authorization": f"Bearer {token}", "X-Padding": "a" * 200_000}
    try:
        response = httpx.post(proxy.url + "/v1/chat/completions", json=GOOD, headers=headers, timeout=30)
        assert 400 <= response.status_code < 500
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        pass  # the server reset or closed the connection: also a refusal
    assert httpx.get(proxy.url + "/health/liveliness", timeout=10).status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# The fields our admission checks. LiteLLM itself answers some wrong-typed fields (e.g. a number
# as "tools") with a 500 before any plugin runs; that is listed as a known limit in the README.
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["gpt-4o-mini", "demo", "nope", ""]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "assistant"]) | json_values,
                    "content": st.text(max_size=30) | json_values,
                }
            ),
            max_size=3,
        )
        | json_values,
        "max_tokens": st.integers(-(2**40), 2**40) | json_values,
        "temperature": st.floats(-5, 5) | json_values,
        "stream": st.booleans() | json_values,
        "n": json_values,
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies)
def test_fuzzed_bodies_never_get_a_5xx(proxy, hostile_tenant, body) -> None:
    """hypothesis over request bodies: any status but 5xx (a valid body may even succeed)."""
    _, token = hostile_tenant
    body = {**body, "messages": body.get("messages", []), "max_tokens": body.get("max_tokens", 3)}
    response = httpx.post(
        proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code < 500, (body, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json()
