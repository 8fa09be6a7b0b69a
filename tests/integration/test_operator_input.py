"""Operator input is checked at the edge: one-line errors from the CLI (never a traceback, also
with the database down) and OpenAI-shaped 4xx from the admin API; key rotation is atomic and keeps
a key's lifetime; tenant names are unique case-insensitively; ``doctor`` says what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from billingproxy.metering import UsageRecord, replay_records
from billingproxy.service import create_app
from billingproxy.tenants import TenantStore
from testkit.support import REPO, ProxyProcess, test_config

ADMIN = "sk-admin-test-" + "b" * 32
DOWN = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DATABASE_URL": database_url, **env}
    environment.pop("BILLINGPROXY_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "billingproxy", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def unique(prefix: str = "op") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tenant_name(database_url) -> str:
    name = unique()
    assert cli(database_url, "tenant", "create", name).returncode == 0
    return name


BAD_INPUTS = [
    (("tenant", "create", "x-{n}", "--budget-usd", "100000000000000"), "below"),
    (("tenant", "create", "x-{n}", "--budget-usd", "0.0000001"), "decimal places"),
    (("tenant", "create", "x-{n}", "--budget-usd", "lots"), "must be a number"),
    (("tenant", "create", "tn_0123456789abcdef"), "looks like a tenant id"),
    (("tenant", "update", "{tenant}", "--price-multiplier", "1.0000001"), "decimal places"),
    (("tenant", "update", "{tenant}", "--rpm", "99999999999"), "whole number"),
    (("key", "create", "{tenant}", "--expires-in-days", "1e20"), "lifetime"),
    (("tenant", "show", "no-such-tenant-{n}"), "no tenant"),
    (("key", "revoke", "key_nosuchkey"), "no key"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_bad_cli_input_is_one_line_and_exit_1(database_url, tenant_name, args, fragment):
    filled = [a.format(n=uuid.uuid4().hex[:6], tenant=tenant_name) for a in args]
    assert_one_line_error(cli(database_url, *filled), fragment)


def test_a_huge_grace_period_is_refused(database_url, tenant_name, conn):
    key_id = TenantStore(conn).create_key(tenant_name)[0].id
    conn.commit()
    assert_one_line_error(cli(database_url, "key", "rotate", key_id, "--grace-hours", "1e20"), "grace period")


COMMANDS = [
    ("tenant", "list"),
    ("tenant", "show", "acme"),
    ("tenant", "create", "acme"),
    ("tenant", "update", "acme", "--rpm", "5"),
    ("tenant", "suspend", "acme"),
    ("key", "list"),
    ("key", "create", "acme"),
    ("key", "rotate", "key_x"),
    ("key", "revoke", "key_x"),
    ("usage", "report", "--tenant", "acme", "--from", "2026-11-01", "--to", "2026-12-01"),
    ("db", "migrate"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_with_the_database_down_says_so_in_one_line(args):
    assert_one_line_error(cli(DOWN, *args), "cannot reach the database")


def test_names_are_unique_case_insensitively_and_found_by_either_spelling(database_url, tenant_name):
    assert_one_line_error(cli(database_url, "tenant", "create", tenant_name.upper()), "already exists")
    shown = cli(database_url, "tenant", "show", tenant_name.upper(), "--json")
    assert shown.returncode == 0 and f'"name": "{tenant_name}"' in shown.stdout


def test_rotation_keeps_the_lifetime_and_a_failed_rotation_leaves_no_key(conn, tenant_name):
    store = TenantStore(conn)
    old, _ = store.create_key(tenant_name, expires_at=None)
    ninety, _ = store.create_key(tenant_name, expires_at=old.created_at + timedelta(days=90))
    successor, token, previous = store.rotate_key(ninety.id, grace=timedelta(hours=1))
    lifetime = successor.expires_at - successor.created_at
    assert timedelta(days=90) - timedelta(seconds=5) < lifetime <= timedelta(days=90) + timedelta(seconds=5)
    assert token.startswith("sk-bp-") and previous.expires_at <= previous.created_at + timedelta(days=90)
    store.revoke_key(old.id)
    before = len(store.list_keys(tenant_name))
    with pytest.raises(ValueError, match="only an active key"):
        store.rotate_key(old.id)
    assert len(store.list_keys(tenant_name)) == before  # no orphan key whose token nobody saw


@pytest.fixture
def api(database_url):
    with TestClient(create_app(database_url, admin_key=ADMIN)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield client


def assert_openai_error(response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and isinstance(error["message"], str)
    for fragment in fragments:
        assert fragment in error["message"], error
    return error


def test_admin_api_refuses_bad_input_openai_style(api):
    name = unique("api")
    assert api.post("/admin/tenants", json={"name": name}).status_code == 201
    error = assert_openai_error(api.patch(f"/admin/tenants/{name}", json={"rpm": 5}), 400, "rpm")
    assert error["param"] == "rpm"  # an unknown field (the column is rpm_limit) is refused, not ignored
    assert_openai_error(api.post("/admin/tenants", json={"name": unique(), "allowed_models": ["x"]}), 400)
    assert_openai_error(api.post("/admin/tenants", json={"name": unique(), "budget_usd": "1e14"}), 400, "below")
    assert_openai_error(api.post("/admin/tenants", json={"name": unique(), "rpm_limit": "many"}), 400, "rpm_limit")
    assert_openai_error(api.post("/admin/tenants", json={"name": name.upper()}), 400, "already exists")
    assert_openai_error(api.post("/admin/keys", json={"tenant": name, "expires_in_days": 1e20}), 400, "lifetime")
    assert_openai_error(api.post("/admin/keys", data="not json", headers={"Content-Type": "application/json"}), 400)
    # curl -d's form type: a JSON body is still read as JSON, a form body is refused as not JSON
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert api.post("/admin/tenants", content=json.dumps({"name": unique()}), headers=form).status_code == 201
    assert_openai_error(api.post("/admin/tenants", content="name=acme", headers=form), 400, "not valid JSON")
    window = {"tenant": name, "start": "2026-12-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    assert_openai_error(api.get("/admin/usage", params=window), 400, "after")
    assert_openai_error(api.get("/admin/tenants/nobody-" + name), 404)


def test_rotate_needs_no_body(api):
    name = unique("api")
    api.post("/admin/tenants", json={"name": name})
    key = api.post("/admin/keys", json={"tenant": name, "expires_in_days": 30}).json()
    rotated = api.post(f"/admin/keys/{key['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["replaces"] == key["id"] and rotated.json()["expires_at"] is not None


def test_admin_api_with_the_database_down_is_a_json_503():
    with TestClient(create_app(DOWN, admin_key=ADMIN)) as client:
        response = client.get("/admin/tenants", headers={"Authorization": f"Bearer {ADMIN}"})
    assert_openai_error(response, 503, "database")


def test_doctor_names_what_is_wrong_and_passes_when_nothing_is(database_url, tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model_list"] = [m for m in config["model_list"] if m["model_name"] == "demo"]
    demo_only = tmp_path / "config.yaml"
    demo_only.write_text(yaml.safe_dump(config))
    good = {"BILLINGPROXY_CONFIG": str(demo_only), "PROXY_MASTER_KEY": ADMIN, "BILLINGPROXY_BILLING_SINK": "webhook"}
    healthy = cli(database_url, "doctor", **good)
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "migrations" in healthy.stdout and "model demo" in healthy.stdout

    broken = cli(
        database_url,
        "doctor",
        **{**good, "BILLINGPROXY_CONFIG": str(REPO / "config.yaml"), "PROXY_MASTER_KEY": "short"},
        OPENAI_API_KEY="",
        BILLINGPROXY_AUTH_CACHE_TTL="ten",
    )
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    failures = [line for line in broken.stdout.splitlines() if line.startswith("FAIL")]
    assert any("master key" in line and "characters" in line for line in failures), broken.stdout
    assert any("model gpt-4o " in line and "OPENAI_API_KEY" in line for line in failures), broken.stdout
    assert any("auth settings" in line and "BILLINGPROXY_AUTH_CACHE_TTL" in line for line in failures)

    down = cli(DOWN, "doctor", **good)
    assert down.returncode == 1 and any(
        line.startswith("FAIL") and "database" in line for line in down.stdout.splitlines()
    )


def test_doctor_fails_for_a_configured_model_without_a_price_in_force(database_url, tmp_path):
    model = unique("new-model")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = next(m for m in config["model_list"] if m["model_name"] == "demo")
    config["model_list"] = [demo, {**demo, "model_name": model}]  # added after `db migrate` ran
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"BILLINGPROXY_CONFIG": str(path), "PROXY_MASTER_KEY": ADMIN, "BILLINGPROXY_BILLING_SINK": "webhook"}
    later = "2030-01-01T00:00:00+00:00"
    assert cli(database_url, "prices", "set", model, "--input-per-mtok", "1", "--output-per-mtok", "2",
               "--effective-at", later).returncode == 0  # fmt: skip
    unpriced = cli(database_url, "doctor", **env)
    assert unpriced.returncode == 1, unpriced.stdout
    (line,) = [line for line in unpriced.stdout.splitlines() if line.startswith("FAIL")]
    assert f"price {model}" in line and "model_not_priced" in line and f"takes effect {later}" in line
    assert f"prices set {model} --input-per-mtok" in line
    as_json = json.loads(cli(database_url, "doctor", "--json", **env).stdout)
    assert [f["check"] for f in as_json if not f["ok"]] == [f"price {model}"]
    assert cli(database_url, "prices", "set", model, "--input-per-mtok", "1", "--output-per-mtok", "2",
               "--effective-at", "2026-01-01T00:00:00Z").returncode == 0  # fmt: skip
    priced = cli(database_url, "doctor", **env)
    assert priced.returncode == 0 and "all 2 configured models priced" in priced.stdout, priced.stdout


def test_a_model_without_provider_credentials_is_refused_at_once(tmp_path, upstream, database_url, conn):
    config = test_config(upstream.base_url)
    config["model_list"].append(
        {
            "model_name": "needs-a-key",
            "litellm_params": {"model": "openai/needs-a-key", "api_key": "os.environ/BP_TEST_UNSET_PROVIDER_KEY"},
            "model_info": {"mode": "chat", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
        }
    )
    proxy = ProxyProcess(tmp_path / "proxy", config, {"BILLINGPROXY_DATABASE_URL": database_url}).start()
    try:
        tenant = unique("creds")
        TenantStore(conn).create_tenant(tenant)
        token = TenantStore(conn).create_key(tenant)[1]
        conn.commit()
        started = time.monotonic()
        response = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "needs-a-key", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "model_not_configured"
        assert "BP_TEST_UNSET_PROVIDER_KEY" not in response.text  # operators' variable names stay private
        assert elapsed < 5  # refused before any provider call (LiteLLM alone took the provider timeout)
        ok = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert ok.status_code == 200, ok.text
    finally:
        proxy.stop()


def test_usage_report_prints_zero_as_zero(database_url, conn, tenant_name):
    tenant = TenantStore(conn).get_tenant(tenant_name)
    failed = UsageRecord.from_json(
        {"request_id": f"req-{uuid.uuid4()}", "tenant_id": tenant.id, "model": "gpt-4o-mini", "status": "failure",
         "start_time": "2026-11-15T12:00:00+00:00", "cost_usd": "0", "prompt_tokens": 3}
    )  # fmt: skip
    replay_records(database_url, [failed])
    window = ("--tenant", tenant_name, "--from", "2026-11-01", "--to", "2026-12-01")
    human = cli(database_url, "usage", "report", *window)
    assert human.returncode == 0 and "E-" not in human.stdout and "total cost: 0 USD" in human.stdout, human.stdout
    machine = cli(database_url, "usage", "report", *window, "--json")
    assert '"total_cost_usd": "0.0000000000"' in machine.stdout and "E-" not in machine.stdout
