"""Budgets and rate limits under concurrency, in one proxy and across two sharing a database/Redis."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import uuid
from decimal import Decimal

import httpx
import pytest
import redis

from billingproxy.metering import PriceTable
from billingproxy.metering import pricing as budget
from testkit.support import REPO, ProxyProcess, budget_of, reservation, test_config, wait_until

PRICES = PriceTable.from_config(REPO / "config.yaml")
# The fake upstream answers after 3 s, so every request is in flight before any one settles.
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "spend some budget please [[latency:3000]]"}],
    "max_tokens": 50,
}


def max_cost(body: dict = BODY) -> Decimal:
    """What the proxy reserves for ``body`` (its tokenizer-counted prompt bound, its output limit)."""
    return reservation(body)


async def fire(urls: list[str], token: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            return await client.post(
                urls[i % len(urls)] + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {token}"}
            )

        return await asyncio.gather(*(one(i) for i in range(count)))


def spend(conn, tenant_id: str) -> tuple[int, Decimal]:
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'success') AS ok, coalesce(sum(cost_usd), 0) AS cost
           FROM litellm_usage WHERE tenant_id = %s""",
        (tenant_id,),
    ).fetchone()
    return row["ok"], row["cost"]


def budget_tenant(store, requests: int):
    tenant = store.create_tenant(f"budget-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(max_cost() * requests))
    return tenant, store.create_key(tenant.id)[1]


def check_budget_held(responses, upstream_before, upstream, conn, tenant) -> None:
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    refused = [r for r in responses if r.status_code == 429]
    assert admitted + len(refused) == len(responses), sorted(set(statuses))
    assert admitted >= 1
    reached = upstream.calls["/v1/chat/completions"] - upstream_before
    assert reached == admitted
    error = refused[0].json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "budget_exceeded"
    _, cost = wait_until(
        lambda: (found := spend(conn, tenant.id))[0] == admitted and found, timeout=30, what="usage rows"
    )
    assert cost <= tenant.budget_usd
    # The spend bound is the invariant. How many are admitted depends on arrival vs settling: all
    # 200 in flight at once admit exactly 10; on a loaded machine some settle (below their maximum)
    # before the last arrive, and what they hand back admits a few more, within the budget.
    rejected = conn.execute(
        "SELECT count(*) AS n, sum(cost_usd) AS c FROM litellm_usage WHERE tenant_id = %s AND status = 'rejected'",
        (tenant.id,),
    ).fetchone()
    assert rejected["n"] == len(refused) and rejected["c"] == 0  # recorded, at zero cost


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 8},  # eight completions, each billed
        {"images": 4},  # four referenced images: their tokens are not in the body's bytes
    ],
    ids=["n=8", "four images"],
)
def test_one_request_cannot_spend_more_than_the_budget(proxy, store, conn, extra):
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "n": extra.get("n", 1)}
    parts = [{"type": "text", "text": "describe these"}]
    parts += [{"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}} for i in range(4)]
    body["messages"] = [{"role": "user", "content": parts if "images" in extra else "eight answers please"}]
    # Room for about two of these requests at their true maximum: the gateway must refuse the
    # third (or the first, had it reserved too little, would already spend several budgets).
    tenant = store.create_tenant(f"bound-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(max_cost(body) * Decimal("2.5")))
    headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}
    statuses = []
    for _ in range(10):
        statuses.append(
            httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=60).status_code
        )
        if statuses[-1] != 200:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    served = statuses.count(200)
    _, cost = wait_until(lambda: (found := spend(conn, tenant.id))[0] == served and found, timeout=30, what="rows")
    assert cost <= tenant.budget_usd, (cost, tenant.budget_usd)


def test_a_file_referenced_by_id_reserves_the_models_context_window(proxy, store):
    """Its pages are not in the body, so its bytes bound nothing: the reservation is gpt-4o-mini's
    context window (config.yaml's max_input_tokens, 128,000 prompt tokens: 0.0192 USD). A budget of
    0.01 USD answers ordinary questions and refuses the file; 0.05 USD admits it."""
    file_part = {"type": "file", "file": {"file_id": "file-abc123"}}
    with_file = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "summarise this"}, file_part]}],
    }
    question = {**with_file, "messages": [{"role": "user", "content": "an ordinary question"}]}
    statuses = {}
    for budget_usd in ("0.01", "0.05"):
        tenant = store.create_tenant(f"file-{uuid.uuid4().hex[:8]}", budget_usd=budget_usd)
        headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}
        for name, body in (("question", question), ("file", with_file)):
            response = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
            statuses[(budget_usd, name)] = response.status_code
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "budget_exceeded"
    expected = {("0.01", "question"): 200, ("0.01", "file"): 429, ("0.05", "question"): 200, ("0.05", "file"): 200}
    assert statuses == expected


def test_200_concurrent_requests_cannot_overspend_one_proxy(proxy, upstream, store, conn):
    tenant, token = budget_tenant(store, 10)
    before = upstream.calls["/v1/chat/completions"]
    responses = asyncio.run(fire([proxy.url], token, 200))
    check_budget_held(responses, before, upstream, conn, tenant)


@pytest.fixture
def second_proxy(tmp_path, upstream, database_url):
    process = ProxyProcess(
        tmp_path / "second",
        test_config(upstream.base_url),
        {"BILLINGPROXY_DATABASE_URL": database_url, "BILLINGPROXY_AUTH_CACHE_TTL": "1"},
    ).start()
    yield process
    process.stop()


def test_200_concurrent_requests_cannot_overspend_two_proxies_sharing_the_database(
    proxy, second_proxy, upstream, store, conn
):
    tenant, token = budget_tenant(store, 10)
    before = upstream.calls["/v1/chat/completions"]
    responses = asyncio.run(fire([proxy.url, second_proxy.url], token, 200))
    check_budget_held(responses, before, upstream, conn, tenant)


def redis_available() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def redis_proxy_env(database_url: str, **extra: str) -> dict[str, str]:
    """A proxy's environment with the Redis budget store (the test is skipped without a Redis)."""
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return {
        "BILLINGPROXY_DATABASE_URL": database_url,
        "BILLINGPROXY_BUDGET_STORE": "redis",
        "BILLINGPROXY_REDIS_URL": "redis://127.0.0.1:6379/0",
        **extra,
    }


def test_200_concurrent_requests_cannot_overspend_two_proxies_sharing_redis(
    tmp_path, upstream, database_url, store, conn
):
    env = redis_proxy_env(database_url)
    first = ProxyProcess(tmp_path / "a", test_config(upstream.base_url), env).start()
    second = ProxyProcess(tmp_path / "b", test_config(upstream.base_url), env).start()
    try:
        tenant, token = budget_tenant(store, 10)
        before = upstream.calls["/v1/chat/completions"]
        responses = asyncio.run(fire([first.url, second.url], token, 200))
        check_budget_held(responses, before, upstream, conn, tenant)
        keys = redis.Redis(host="127.0.0.1", port=6379).keys(f"billingproxy:budget:{tenant.id}:*")
        assert keys  # the grants really went through Redis
    finally:
        first.stop()
        second.stop()


def test_a_redis_that_lost_its_data_does_not_reset_the_budget(tmp_path, upstream, database_url, store, conn):
    """The tenant's keys vanish mid-period (Redis restarted without persistence, evicted, failed
    over to an empty replica): spend is the ledger in PostgreSQL, so nothing starts again from 0."""
    env = redis_proxy_env(database_url, BILLINGPROXY_WRITER_INTERVAL_MS="100")
    proxy = ProxyProcess(tmp_path / "r", test_config(upstream.base_url), env).start()
    client = redis.Redis(host="127.0.0.1", port=6379)
    quick = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "lost"}], "max_tokens": 20}
    tenant = store.create_tenant(f"lost-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(max_cost(quick) * 12))
    headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}

    def send() -> int:
        return httpx.post(proxy.url + "/v1/chat/completions", json=quick, headers=headers, timeout=60).status_code

    try:
        served = 0
        while served < 6 and send() == 200:  # about half the budget
            served += 1
        assert served == 6
        wait_until(lambda: spend(conn, tenant.id)[0] == served, timeout=30, what="the first rows")
        lost = client.keys(f"billingproxy:budget:{tenant.id}:*")
        assert lost and client.delete(*lost)  # the data is gone
        for _ in range(40):  # a store that restarted from 0 would admit another whole budget
            if send() != 200:
                break
            served += 1
        assert served < 40
        _, cost = wait_until(lambda: (found := spend(conn, tenant.id))[0] == served and found, timeout=30, what="rows")
        assert cost <= tenant.budget_usd, (served, cost, tenant.budget_usd)
    finally:
        proxy.stop()


def test_tenant_without_budget_and_admin_are_not_limited(proxy, store):
    tenant = store.create_tenant(f"free-{uuid.uuid4().hex[:8]}")
    token = store.create_key(tenant.id)[1]
    cheap = {**BODY, "messages": [{"role": "user", "content": "no budget"}]}
    response = httpx.post(proxy.url + "/v1/chat/completions", json=cheap, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_budget_threshold_lines_appear_once_per_crossing(proxy, store, conn):
    quick = {**BODY, "messages": [{"role": "user", "content": "threshold check"}], "max_tokens": 10}
    one_request = max_cost(quick)
    # Requests are admitted while a maximum-cost reservation fits, so when the first one is
    # refused at least 90 % of the budget is spent: 50 % and 80 % must each be announced once.
    tenant = store.create_tenant(f"thresh-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(one_request * 10))
    token = store.create_key(tenant.id)[1]
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []
    while not statuses or statuses[-1] == 200:
        statuses.append(httpx.post(proxy.url + "/v1/chat/completions", json=quick, headers=headers).status_code)
        assert len(statuses) < 60, "the budget never ran out"
    assert statuses[-1] == 429 and len(statuses) > 10

    def threshold_lines() -> list[int]:
        pattern = re.compile(rf"tenant {tenant.id} crossed (\d+)% of its budget")
        return [int(match[1]) for match in pattern.finditer(proxy.output())]

    lines = wait_until(lambda: (t := threshold_lines()) and 80 in t and t, timeout=15, what="threshold lines")
    mark = conn.execute("SELECT now() AS t").fetchone()["t"]
    conn.commit()
    for _ in range(3):  # more refused requests change nothing
        httpx.post(proxy.url + "/v1/chat/completions", json=quick, headers=headers)
    wait_until(  # the store has heard from the instance since, with every settled row written
        lambda: conn.execute(
            """SELECT 1 FROM budget_leases WHERE tenant_id = %s AND pending = 0
               AND expires_at - interval '10 seconds' > %s""",
            (tenant.id, mark),
        ).fetchone(),
        timeout=10,
        what="a later budget report",
    )
    assert sorted(threshold_lines()) == [50, 80], lines  # once each, never repeated


def test_rpm_limit_is_per_tenant_across_its_keys(proxy, store):
    """A tenant's RPM is its own, however many keys it spreads requests over."""
    tenant = store.create_tenant(f"rpmkeys-{uuid.uuid4().hex[:8]}", rpm_limit=4)
    tokens = [store.create_key(tenant.id)[1] for _ in range(2)]
    cheap = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "rate"}], "max_tokens": 1}
    statuses = [
        httpx.post(
            proxy.url + "/v1/chat/completions", json=cheap, headers={"Authorization": f"Bearer {tokens[i % 2]}"}
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429], statuses


def test_rpm_limit_across_two_processes_sharing_redis(tmp_path, upstream, database_url, store):
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    tenant = store.create_tenant(f"rpm-{uuid.uuid4().hex[:8]}", rpm_limit=5)
    token = store.create_key(tenant.id)[1]
    env = {
        "BILLINGPROXY_DATABASE_URL": database_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
    }
    config = test_config(upstream.base_url)
    config["general_settings"]["coordination_redis"] = {"host": "127.0.0.1", "port": 6379}
    first = ProxyProcess(tmp_path / "a", config, env).start()
    second = ProxyProcess(tmp_path / "b", config, env).start()
    try:
        cheap = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "rate"}], "max_tokens": 1}
        headers = {"Authorization": f"Bearer {token}"}
        statuses = []
        for i in range(6):
            url = (first if i % 2 == 0 else second).url
            response = httpx.post(url + "/v1/chat/completions", json=cheap, headers=headers, timeout=30)
            statuses.append(response.status_code)
        assert statuses[:5] == [200] * 5, statuses
        assert statuses[5] == 429, statuses
        assert int(response.headers["retry-after"]) > 0
    finally:
        first.stop()
        second.stop()


def test_tenant_show_reports_spend_reserved_and_remaining(proxy, store, conn, database_url, monkeypatch):
    from click.testing import CliRunner

    from billingproxy.cli import main as cli

    quick = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}], "max_tokens": 4}
    tenant = store.create_tenant(f"show-{uuid.uuid4().hex[:8]}", budget_usd="1.00", budget_period="daily")
    token = store.create_key(tenant.id)[1]
    for _ in range(3):
        response = httpx.post(
            proxy.url + "/v1/chat/completions", json=quick, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
    spent = 3 * (2 * Decimal("0.00000015") + 4 * Decimal("0.0000006"))
    monkeypatch.setenv("DATABASE_URL", database_url)

    def shown() -> dict:
        result = CliRunner().invoke(cli, ["tenant", "show", tenant.id, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    data = wait_until(lambda: (d := shown()) and Decimal(d["spent_usd"]) == spent and d, timeout=15, what="spend")
    assert data["budget_period"] == "daily"
    reserved = Decimal(data["reserved_usd"])
    assert reserved > 0  # this proxy still holds a slice of the remaining budget
    assert Decimal(data["remaining_usd"]) == Decimal("1.00") - spent - reserved


def test_threshold_webhook_is_called_once_per_crossing(tmp_path, upstream, database_url, store):
    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/budget"
    proxy = ProxyProcess(
        tmp_path / "hook",
        test_config(upstream.base_url),
        {"BILLINGPROXY_DATABASE_URL": database_url, "BILLINGPROXY_BUDGET_WEBHOOK_URL": hook_url},
    ).start()
    try:
        quick = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hook"}], "max_tokens": 10}
        tenant = store.create_tenant(f"hook-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(max_cost(quick) * 10))
        headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}
        while httpx.post(proxy.url + "/v1/chat/completions", json=quick, headers=headers).status_code == 200:
            pass
        wait_until(lambda: len(received) >= 2, timeout=15, what="two webhook calls")
        assert [(e["tenant_id"], e["threshold_pct"]) for e in received] == [(tenant.id, 50), (tenant.id, 80)]
        assert all(e["type"] == "budget.threshold_crossed" and Decimal(e["spent_usd"]) > 0 for e in received)
    finally:
        proxy.stop()
        server.shutdown()


def test_near_the_end_of_a_budget_a_filled_in_output_limit_shrinks_to_what_is_left(proxy, store, conn):
    """A request without max_tokens reserves for the model's output cap (config.yaml's
    max_output_tokens, 16,384 for gpt-4o-mini) and reaches the provider without one. With less
    room than that left, it is answered with max_tokens cut to what the budget pays (the fake
    provider uses all of it: the worst case), never refused for a reservation it would not need; a
    client's own max_tokens is reserved whole or refused."""
    question = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a cheap question"}]}
    roomy = store.create_tenant(f"roomy-{uuid.uuid4().hex[:8]}", budget_usd=Decimal(10))
    plain = httpx.post(
        proxy.url + "/v1/chat/completions",
        json=question,
        headers={"Authorization": f"Bearer {store.create_key(roomy.id)[1]}"},
        timeout=60,
    )
    assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] == 8  # nothing written
    cap = 16_384
    full = max_cost({**question, "max_tokens": cap})
    tenant = store.create_tenant(f"shrink-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(full / 3))
    headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}
    explicit = {**question, "max_tokens": cap}
    refused = httpx.post(proxy.url + "/v1/chat/completions", json=explicit, headers=headers, timeout=60)
    assert refused.status_code == 429, refused.text
    answered = httpx.post(proxy.url + "/v1/chat/completions", json=question, headers=headers, timeout=60)
    assert answered.status_code == 200, answered.text
    completion = answered.json()["usage"]["completion_tokens"]
    assert 64 <= completion < cap / 3 + 1, completion  # the limit written: about a third of the cap
    _, cost = wait_until(lambda: (found := spend(conn, tenant.id))[0] == 1 and found, timeout=30, what="the row")
    assert cost <= tenant.budget_usd, (cost, tenant.budget_usd)
    # What is left pays for fewer than 64 output tokens: refused, not answered with a stub.
    for _ in range(5):
        last = httpx.post(proxy.url + "/v1/chat/completions", json=question, headers=headers, timeout=60)
        if last.status_code != 200:
            break
    assert last.status_code == 429, last.text
    _, cost = wait_until(lambda: spend(conn, tenant.id), timeout=5, what="the rows")
    assert cost <= tenant.budget_usd, (cost, tenant.budget_usd)


def test_an_openai_models_prompt_is_reserved_at_its_tokenizer_count_not_its_bytes(proxy, store, conn):
    """gpt-4o's prompt is bounded with o200k_base, as OpenAI counts it: a budget that pays for
    the counted bound admits the request, though the byte bound (~4.4x for English) would not fit."""
    text = "Please summarise the quarterly report and list the three largest cost drivers. " * 60
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    allowance = budget_of(max_cost(body) * Decimal("1.5"))  # max_cost: the bound counted with o200k_base
    assert budget.max_cost(PRICES, "gpt-4o", body, 16_384) > allowance  # by bytes this budget would refuse it
    tenant = store.create_tenant(f"tokens-{uuid.uuid4().hex[:8]}", budget_usd=allowance)
    headers = {"Authorization": f"Bearer {store.create_key(tenant.id)[1]}"}
    answered = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert answered.status_code == 200, answered.text
    _, cost = wait_until(lambda: (found := spend(conn, tenant.id))[0] == 1 and found, timeout=30, what="the row")
    assert 0 < cost <= allowance
