"""Budgets and limits below the tenant (issue 19): per key and per end user, all hard, through
real proxies; and changes reaching every instance within a second (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import httpx
import pytest
import redis
from click.testing import CliRunner

from billingproxy.cli import main as cli
from testkit.support import ProxyProcess, budget_of, reservation, test_config, wait_until
from tests.integration.test_budgets import redis_proxy_env

QUICK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "levels"}], "max_tokens": 20}
# The fake upstream answers after 3 s, so all 200 requests are in flight before any one settles.
SLOW = {**QUICK, "messages": [{"role": "user", "content": "spend it [[latency:3000]]"}]}


def max_cost(body: dict) -> Decimal:
    """What the proxy reserves for ``body`` (its tokenizer-counted prompt bound, its output limit)."""
    return reservation(body)


def post(url: str, token: str, body: dict = QUICK, **headers: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}", **headers}, timeout=60
    )


def run_cli(database_url: str, *args: str) -> str:
    result = CliRunner(env={"DATABASE_URL": database_url}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def served_until_refused(url: str, token: str, body: dict = QUICK, limit: int = 40, **headers: str):
    statuses = []
    while len(statuses) < limit:
        response = post(url, token, body, **headers)
        statuses.append(response.status_code)
        if response.status_code != 200:
            return statuses, response
    raise AssertionError(f"never refused: {statuses}")


def rows(conn, where: str, params: tuple) -> tuple[int, Decimal]:
    row = conn.execute(
        f"""SELECT count(*) FILTER (WHERE status = 'success') AS ok, coalesce(sum(cost_usd), 0) AS cost
            FROM litellm_usage WHERE {where}""",  # noqa: S608 - the tests own every where clause
        params,
    ).fetchone()
    conn.commit()
    return row["ok"], row["cost"]


def test_an_end_user_over_its_daily_budget_is_refused_while_another_is_served(proxy, store, conn, database_url):
    tenant = store.create_tenant(f"eu-{uuid.uuid4().hex[:8]}", budget_usd="10")
    # Room for three requests a day per end user; carol has an override with room for many.
    run_cli(
        database_url,
        "tenant", "update", tenant.id,
        "--end-user-budget-usd", str(budget_of(max_cost(QUICK) * 3)), "--end-user-budget-period", "daily",
    )  # fmt: skip
    run_cli(database_url, "end-user", "set", tenant.id, "carol", "--budget-usd", "5")
    assert "carol" in run_cli(database_url, "end-user", "list", tenant.id)
    token = store.create_key(tenant.id)[1]

    statuses, refused = served_until_refused(proxy.url, token, {**QUICK, "user": "alice"})
    assert statuses[:3] == [200, 200, 200] and len(statuses) <= 5, statuses
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["level"] == "end_user", error
    assert refused.headers["x-should-retry"] == "false" and int(refused.headers["retry-after"]) <= 86_400
    # Another end user of the same tenant and key, by the header this time, is still served.
    assert post(proxy.url, token, **{"X-BillingProxy-End-User": "bob"}).status_code == 200
    # carol's override beats the default: more than three requests.
    assert [post(proxy.url, token, {**QUICK, "user": "carol"}).status_code for _ in range(5)] == [200] * 5
    # A request with no end user has no end-user budget.
    assert post(proxy.url, token).status_code == 200
    _ok, cost = wait_until(
        lambda: (
            (r := rows(conn, "tenant_id = %s AND end_user = 'alice'", (tenant.id,)))[0] == statuses.count(200) and r
        ),
        timeout=30,
        what="alice's rows",
    )
    assert cost <= budget_of(max_cost(QUICK) * 3)


def test_a_key_over_its_budget_is_refused_while_another_key_is_served(proxy, store, conn, database_url):
    tenant = store.create_tenant(f"kb-{uuid.uuid4().hex[:8]}", budget_usd="10")
    capped = run_cli(
        database_url,
        "key", "create", tenant.id, "--budget-usd", str(budget_of(max_cost(QUICK) * 3)), "--budget-period", "monthly",
        "--json",
    )  # fmt: skip
    capped = json.loads(capped)
    other = store.create_key(tenant.id)[1]
    statuses, refused = served_until_refused(proxy.url, capped["token"])
    assert statuses[:3] == [200, 200, 200] and len(statuses) <= 5, statuses
    error = refused.json()["error"]
    assert refused.status_code == 429 and error["level"] == "key" and error["code"] == "budget_exceeded", error
    assert post(proxy.url, other).status_code == 200
    _ok, cost = wait_until(
        lambda: (r := rows(conn, "api_key_id = %s", (capped["id"],)))[0] == statuses.count(200) and r,
        timeout=30,
        what="the key's rows",
    )
    assert cost <= Decimal(capped["budget_usd"])
    # Raising the key's budget lets it through again (the proxy hears of it within a second).
    run_cli(database_url, "key", "update", capped["id"], "--budget-usd", "1")
    wait_until(lambda: post(proxy.url, capped["token"]).status_code == 200, timeout=5, what="the raised budget")


def test_a_key_rpm_limit_refuses_that_key_only(proxy, store, database_url):
    tenant = store.create_tenant(f"krpm-{uuid.uuid4().hex[:8]}", rpm_limit=100)
    limited = json.loads(run_cli(database_url, "key", "create", tenant.id, "--rpm", "3", "--tpm", "20000", "--json"))
    other = store.create_key(tenant.id)[1]
    cheap = {**QUICK, "max_tokens": 1}
    statuses = [post(proxy.url, limited["token"], cheap).status_code for _ in range(4)]
    if statuses != [200, 200, 200, 429]:  # a minute boundary fell between them: the next minute holds
        statuses = [post(proxy.url, limited["token"], cheap).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses
    assert [post(proxy.url, other, cheap).status_code for _ in range(4)] == [200] * 4


def test_a_key_per_model_rpm_limit_refuses_that_model_only(proxy, store, database_url):
    tenant = store.create_tenant(f"mrpm-{uuid.uuid4().hex[:8]}")
    key = json.loads(run_cli(database_url, "key", "create", tenant.id, "--model-rpm", "gpt-4o-mini=2", "--json"))
    assert key["model_limits"] == {"gpt-4o-mini": {"rpm": 2}}
    mini = {**QUICK, "max_tokens": 1}
    other = {**mini, "model": "gpt-4o"}
    statuses = [post(proxy.url, key["token"], mini).status_code for _ in range(3)]
    if statuses != [200, 200, 429]:  # a minute boundary fell between them
        statuses = [post(proxy.url, key["token"], mini).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], statuses
    assert [post(proxy.url, key["token"], other).status_code for _ in range(3)] == [200] * 3
    updated = json.loads(run_cli(database_url, "key", "update", key["id"], "--model-rpm", "gpt-4o-mini=none", "--json"))
    assert updated["model_limits"] == {}


@pytest.fixture(scope="module")
def two_proxies(tmp_path_factory, upstream, database_url):
    """Two instances sharing the database, auth cache TTL at its default (10 s)."""
    pair = _start_pair(tmp_path_factory.mktemp("levels"), upstream, {"BILLINGPROXY_DATABASE_URL": database_url})
    yield pair
    for process in pair:
        process.stop()


def _start_pair(workdir, upstream, env) -> tuple[ProxyProcess, ProxyProcess]:
    first = ProxyProcess(workdir / "a", test_config(upstream.base_url), env).start()
    try:
        second = ProxyProcess(workdir / "b", test_config(upstream.base_url), env).start()
    except BaseException:
        first.stop()
        raise
    return first, second


def test_200_concurrent_requests_over_two_proxies_overshoot_no_level(two_proxies, store, conn):
    check_levels_hold([p.url for p in two_proxies], store, conn)


def test_200_concurrent_requests_over_two_proxies_sharing_redis_overshoot_no_level(
    tmp_path, upstream, database_url, store, conn
):
    pair = _start_pair(tmp_path, upstream, redis_proxy_env(database_url))
    try:
        tenant_id, spent = check_levels_hold([p.url for p in pair], store, conn)
        client = redis.Redis(host="127.0.0.1", port=6379)
        # The grants went through Redis, one hash per scope (the key's only if one got that far).
        assert client.keys(f"billingproxy:budget:end_user:{tenant_id}:*")
        assert client.keys(f"billingproxy:budget:key:{tenant_id}:*") or not spent["key"]
    finally:
        for process in pair:
            process.stop()


def check_levels_hold(urls: list[str], store, conn) -> tuple[str, dict[str, Decimal]]:
    """200 requests at once over two instances, two keys (one with a budget for 5 requests) and
    five end users (each with the tenant's default, 8 requests; the tenant has 60): no level is
    overshot (the tenant level alone is tested so in test_budgets)."""
    one = max_cost(SLOW)
    tenant = store.create_tenant(f"lv-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(one * 60))
    store.update_tenant(tenant.id, end_user_budget_usd=budget_of(one * 8), end_user_budget_period="daily")
    capped, capped_token = store.create_key(tenant.id, budget_usd=budget_of(one * 5))
    _, free_token = store.create_key(tenant.id)
    end_users = [f"u{i}" for i in range(5)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:

            async def one_request(i: int) -> httpx.Response:
                token = capped_token if i % 2 else free_token
                body = {**SLOW, "user": end_users[i % 5]}
                return await client.post(
                    urls[(i // 2) % 2] + "/v1/chat/completions",  # each key over both instances
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )

            return await asyncio.gather(*(one_request(i) for i in range(200)))

    responses = asyncio.run(fire())
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    assert admitted + statuses.count(429) == 200, [r.text for r in responses if r.status_code not in (200, 429)]
    # How many get in depends on arrival vs settling and on slices stranded on the other instance
    # (held there, not reserved); the bounds per level below are the invariant.
    assert admitted >= 5
    levels = {r.json()["error"]["level"] for r in responses if r.status_code == 429}
    # Which level refuses a given request depends on arrival order; the bounds below are the point.
    assert levels & {"key", "end_user"} and levels <= {"tenant", "key", "end_user"}, levels
    wait_until(lambda: rows(conn, "tenant_id = %s", (tenant.id,))[0] == admitted, timeout=30, what="rows")
    spent = {"tenant": rows(conn, "tenant_id = %s", (tenant.id,))[1]}
    spent["key"] = rows(conn, "api_key_id = %s", (capped.id,))[1]
    assert spent["tenant"] <= budget_of(one * 60), spent
    assert spent["key"] <= capped.budget_usd, spent
    for end_user in end_users:
        spent[end_user] = rows(conn, "tenant_id = %s AND end_user = %s", (tenant.id, end_user))[1]
        assert spent[end_user] <= budget_of(one * 8), spent
    print(f"admitted {admitted}, refused by levels {sorted(levels)}, spent {spent}")
    return tenant.id, spent


def refused_by_both(urls: list[str], token: str, status: int, deadline_s: float = 1.0) -> float:
    """Seconds until every instance refuses ``token`` with ``status``; fails past the deadline."""
    started = time.monotonic()
    pending = set(urls)
    while pending:
        for url in list(pending):
            if post(url, token, {**QUICK, "max_tokens": 1}).status_code == status:
                pending.discard(url)
        elapsed = time.monotonic() - started
        assert elapsed < deadline_s, f"still served by {sorted(pending)} after {elapsed:.2f} s"
    return time.monotonic() - started


def test_a_revoked_key_and_a_suspended_tenant_are_refused_by_both_instances_within_a_second(
    two_proxies, store, database_url
):
    urls = [p.url for p in two_proxies]
    tenant = store.create_tenant(f"nt-{uuid.uuid4().hex[:8]}")
    key = json.loads(run_cli(database_url, "key", "create", tenant.id, "--json"))
    other = store.create_key(tenant.id)[1]
    for url in urls:  # both instances have the keys cached (TTL 10 s)
        assert post(url, key["token"]).status_code == 200
        assert post(url, other).status_code == 200

    run_cli(database_url, "key", "revoke", key["id"])
    took = refused_by_both(urls, key["token"], 401)
    assert all(post(url, other).status_code == 200 for url in urls)  # the tenant's other key still works

    run_cli(database_url, "tenant", "suspend", tenant.id)
    took = max(took, refused_by_both(urls, other, 403))
    run_cli(database_url, "tenant", "resume", tenant.id)
    refused_by_both(urls, other, 200)
    print(f"changes reached both instances within {took:.3f} s")


def test_with_the_change_channel_cut_a_revocation_still_lands_within_the_ttl(two_proxies, store, conn, database_url):
    """The LISTEN connections are killed (a database failover, a proxy in between): the revocation
    sent meanwhile is not heard, yet both instances refuse the key within the TTL (10 s) — sooner,
    since a follower that reconnects refetches everything it has cached."""
    urls = [p.url for p in two_proxies]
    tenant = store.create_tenant(f"cut-{uuid.uuid4().hex[:8]}")
    key, token = store.create_key(tenant.id)
    for url in urls:
        assert post(url, token).status_code == 200
    database = conn.execute("SELECT current_database() AS name").fetchone()["name"]
    cut = conn.execute(
        """SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
           WHERE application_name = 'billingproxy-auth' AND datname = %s""",
        (database,),
    ).fetchone()["n"]
    conn.commit()
    assert cut >= 2
    store.revoke_key(key.id)
    took = refused_by_both(urls, token, 401, deadline_s=10.5)
    print(f"revocation with the channel cut reached both instances in {took:.2f} s")
