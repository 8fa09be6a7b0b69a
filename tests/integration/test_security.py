"""Security: tenant tokens reach only the metered API, tenants cannot read each other's usage,
and nothing a run writes (logs, rows, spill files, relay output) holds a secret or prompt text."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from billingproxy import db
from billingproxy.metering import replay_files
from billingproxy.service import create_app
from testkit.billing import relay_process
from testkit.fakes.stripe_api import API_KEY as STRIPE_KEY
from testkit.support import MASTER_KEY, ProxyProcess, tenant_with_token, test_config

ADMIN_ROUTES = [
    ("GET", "/health"),  # would call every provider on our account
    ("GET", "/spend/logs"),
    ("GET", "/global/spend/report"),
    ("GET", "/key/list"),
    ("POST", "/key/generate"),
    ("GET", "/user/info"),
    ("GET", "/team/list"),
    ("GET", "/model/info"),
    ("GET", "/routes"),
    ("GET", "/debug/asyncio-tasks"),
    ("GET", "/get/config/callbacks"),
    ("POST", "/config/update"),
    ("POST", "/cache/flushall"),
    ("GET", "/v1/files"),  # the shared provider account's files: another tenant's uploads
    ("GET", "/v1/batches"),
    ("GET", "/v1/responses/resp_123"),  # a stored response by id, whoever created it
]


@pytest.mark.parametrize("method,path", ADMIN_ROUTES, ids=[p for _, p in ADMIN_ROUTES])
def test_tenant_tokens_cannot_call_management_routes(proxy, upstream, database_url, method, path) -> None:
    _, token = tenant_with_token(database_url, "sec")
    before = sum(upstream.calls.values())
    response = httpx.request(
        method, proxy.url + path, headers={"Authorization": f"Bearer {token}"}, json={} if method == "POST" else None
    )
    assert response.status_code == 403, response.text[:300]
    assert response.json()["error"]["code"] == "route_not_allowed"
    assert sum(upstream.calls.values()) == before


def test_tenant_tokens_reach_the_metered_api_and_the_master_key_the_rest(proxy, database_url) -> None:
    _, token = tenant_with_token(database_url, "sec")
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    assert "gpt-4o-mini" in [model.id for model in client.models.list()]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.usage.total_tokens > 0
    assert client.embeddings.create(model="text-embedding-3-small", input="hi").data
    admin = httpx.get(proxy.url + "/get/config/callbacks", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert admin.status_code == 200


def test_tenants_cannot_read_usage_through_the_admin_api(database_url) -> None:
    """The billing service's admin API answers only the master key, never a tenant's token."""
    admin_key = "sk-admin-" + uuid.uuid4().hex
    victim, _ = tenant_with_token(database_url, "sec")
    _, attacker_token = tenant_with_token(database_url, "sec")
    with TestClient(create_app(database_url, admin_key=admin_key)) as client:
        for path in ("/admin/usage", "/admin/tenants", f"/admin/tenants/{victim}", "/admin/keys"):
            for credentials in (f"Bearer {attacker_token}", attacker_token, f"Bearer {admin_key}x", ""):
                response = client.get(path, params={"tenant": victim}, headers={"Authorization": credentials})
                assert response.status_code == 401, (path, credentials[:12])
                assert victim not in response.text
        allowed = client.get(
            "/admin/usage", params={"tenant": victim}, headers={"Authorization": f"Bearer {admin_key}"}
        )
        assert allowed.status_code == 200


def test_nothing_a_run_wrote_holds_a_secret_or_prompt_text(
    monkeypatch, tmp_path, upstream, private_pg, private_db, fake_stripe
) -> None:
    """One run through every path that writes (success, stream, embeddings, provider errors that
    quote the input, a broken stream, refusals, a database outage with a spill on SIGTERM, the
    relay), then grep everything it wrote for the secrets and the prompt."""
    prompt = f"confidential-{uuid.uuid4().hex}"
    provider_key = f"sk-provider-{uuid.uuid4().hex}"
    wrong_token = f"sk-bp-{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}"
    customer = f"cus_{uuid.uuid4().hex[:14]}"
    tenant_id, token = tenant_with_token(private_db, "sec", stripe_customer_id=customer)

    config = test_config(upstream.base_url)
    for entry in config["model_list"]:
        entry["litellm_params"]["api_key"] = provider_key
    proxy = ProxyProcess(
        tmp_path / "proxy",
        config,
        {"BILLINGPROXY_DATABASE_URL": private_db, "BILLINGPROXY_BILLING_WINDOW_S": "1"},
    ).start()
    try:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
        messages = [{"role": "user", "content": f"{prompt} please"}]
        # `user` is attribution (stored as end_user, issue 19), not prompt text: its own value.
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, user=f"end-user-{uuid.uuid4().hex}")
        list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
        client.embeddings.create(model="text-embedding-3-small", input=prompt)
        for fault in ("400", "500"):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"{prompt} [[fault:{fault}]]"}]
                )
        with pytest.raises(openai.APIError):
            broken = [{"role": "user", "content": f"{prompt} [[fault:broken_stream]]"}]
            list(client.chat.completions.create(model="gpt-4o-mini", messages=broken, stream=True))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=-5)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=proxy.url + "/v1", api_key=wrong_token, max_retries=0).models.list()
        httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}).raise_for_status()

        private_pg.stop()  # rows now wait in memory and are spilled at SIGTERM
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert proxy.terminate() == 0
    finally:
        proxy.stop()
        private_pg.start()

    spill_files = sorted(Path(proxy.workdir / f"spill-{proxy.port}").glob("usage-*.jsonl"))
    monkeypatch.setenv("BILLINGPROXY_BILLING_WINDOW_S", "1")
    assert replay_files(private_db, spill_files)[1] >= 3  # the outage's rows (and any still queued)
    relay = relay_process(fake_stripe, private_db)
    relay_output = relay.communicate(timeout=120)[0].decode()
    assert relay.returncode == 0, relay_output
    assert fake_stripe.totals().get(customer, 0) > 0

    written = {
        "proxy output": proxy.output(),
        "spill files": "".join(path.read_text() for path in spill_files),
        "relay output": relay_output,
        "database": database_text(private_db),
    }
    # The grep is not vacuous: the run did write logs, rows and spill lines about this tenant.
    for where, text in written.items():
        if where != "relay output":
            assert tenant_id in text, where
    assert written["proxy output"].count('"message": "litellm_request"') >= 9
    secrets = {
        "tenant token": token,
        "wrong token": wrong_token,
        "master key": MASTER_KEY,
        "provider key": provider_key,
        "Stripe key": STRIPE_KEY,
        "prompt": prompt,
    }
    leaks = [(name, where) for name, secret in secrets.items() for where, text in written.items() if secret in text]
    assert leaks == []


def database_text(url: str) -> str:
    """Every row of every table in the database, as text."""
    with db.connect(url) as conn:
        tables = [
            row["table_name"]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        dump = []
        for table in tables:
            query = sql.SQL("SELECT t::text AS row FROM {} t").format(sql.Identifier(table))
            dump.extend(row["row"] for row in conn.execute(query).fetchall())
    return "\n".join(dump)
