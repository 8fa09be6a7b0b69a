"""The optional LiteLLM Redis response cache: hits are recorded and billed by policy (free by default)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
import redis

from testkit.support import ProxyProcess, test_config, wait_until


def cached_proxy(tmp_path, upstream, database_url, **env) -> ProxyProcess:
    config = test_config(upstream.base_url)
    namespace = f"bp-test-{uuid.uuid4().hex[:6]}"
    config["litellm_settings"].update(
        cache=True, cache_params={"type": "redis", "host": "127.0.0.1", "port": 6379, "namespace": namespace}
    )
    return ProxyProcess(tmp_path / namespace, config, {"BILLINGPROXY_DATABASE_URL": database_url, **env}).start()


@pytest.fixture(autouse=True)
def need_redis():
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")


@pytest.mark.parametrize(("policy", "hit_billed"), [("free", False), ("full", True)])
def test_cache_hits_are_recorded_and_billed_by_policy(
    tmp_path, upstream, database_url, store, conn, policy, hit_billed
):
    proxy = cached_proxy(tmp_path, upstream, database_url, BILLINGPROXY_CACHE_HIT_POLICY=policy)
    try:
        tenant = store.create_tenant(f"cache-{uuid.uuid4().hex[:8]}")
        token = store.create_key(tenant.id)[1]
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"cache me {uuid.uuid4()}"}]}
        headers = {"Authorization": f"Bearer {token}"}
        before = upstream.calls["/v1/chat/completions"]
        first = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        second = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert first.status_code == second.status_code == 200
        assert first.json()["choices"] == second.json()["choices"]
        assert upstream.calls["/v1/chat/completions"] - before == 1  # the second came from the cache

        rows = wait_until(
            lambda: (r := conn.execute(
                "SELECT cache_hit, cost_usd FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time", (tenant.id,)
            ).fetchall()) and len(r) == 2 and r,
            what="two usage rows",
        )  # fmt: skip
        miss, hit = rows
        full_cost = 3 * Decimal("0.00000015") + 8 * Decimal("0.0000006")
        assert (miss["cache_hit"], miss["cost_usd"]) == (False, full_cost)
        assert hit["cache_hit"] is True
        assert hit["cost_usd"] == (full_cost if hit_billed else 0)
    finally:
        proxy.stop()
