"""The operator CLI and the admin HTTP API on a real database."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billingproxy.cli import main as cli
from billingproxy.service import create_app
from billingproxy.tokens import hash_token

ADMIN = "sk-admin-test-" + "a" * 32


@pytest.fixture
def run_cli(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, list(args))
        if ok:
            assert result.exit_code == 0, result.output
            return json.loads(result.output) if "--json" in args else result.output
        assert result.exit_code != 0
        return result.output

    return invoke


def name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_tenant_lifecycle_through_the_cli(run_cli):
    tenant_name = name()
    created = run_cli(
        "tenant", "create", tenant_name, "--budget-usd", "12.50", "--models", "gpt-4o,gpt-4o-mini",
        "--rpm", "60", "--tpm", "10000", "--stripe-customer", f"cus_{uuid.uuid4().hex[:10]}", "--json",
    )  # fmt: skip
    assert created["id"].startswith("tn_") and created["budget_usd"] == "12.500000"
    assert created["allowed_models"] == ["gpt-4o", "gpt-4o-mini"] and created["rpm_limit"] == 60
    assert run_cli("tenant", "show", tenant_name, "--json")["id"] == created["id"]
    assert created["id"] in [t["id"] for t in run_cli("tenant", "list", "--json")]
    updated = run_cli("tenant", "update", created["id"], "--rpm", "none", "--budget-usd", "20", "--json")
    assert updated["rpm_limit"] is None and updated["budget_usd"] == "20.000000" and updated["tpm_limit"] == 10000
    assert run_cli("tenant", "suspend", tenant_name, "--json")["status"] == "suspended"
    assert run_cli("tenant", "resume", tenant_name, "--json")["status"] == "active"
    assert tenant_name in run_cli("tenant", "list")  # the table form


def test_cli_refuses_bad_input_with_a_clear_message(run_cli):
    assert "budget must be a non-negative amount" in run_cli("tenant", "create", name(), "--budget-usd", "-1", ok=False)
    assert "Stripe customer ids look like cus_" in run_cli(
        "tenant", "create", name(), "--stripe-customer", "bogus", ok=False
    )
    assert "no tenant with id or name" in run_cli("tenant", "show", "no-such-tenant", ok=False)
    existing = name()
    run_cli("tenant", "create", existing)
    assert "already exists" in run_cli("tenant", "create", existing, ok=False)
    assert "no key with id" in run_cli("key", "revoke", "key_missing", ok=False)


def test_key_lifecycle_through_the_cli(run_cli, conn):
    tenant = run_cli("tenant", "create", name(), "--json")
    created = run_cli("key", "create", tenant["id"], "--name", "ci", "--json")
    token = created["token"]
    assert token.startswith("sk-bp-") and len(token) >= 6 + 43  # 32 random bytes, url-safe base64
    stored = conn.execute("SELECT * FROM api_keys WHERE id = %s", (created["id"],)).fetchone()
    assert stored["key_hash"] == hash_token(token) and token not in str(stored)
    assert stored["key_prefix"] == token[: len(stored["key_prefix"])] and len(stored["key_prefix"]) < 16
    listed = run_cli("key", "list", "--tenant", tenant["id"], "--json")
    assert [k["id"] for k in listed] == [created["id"]] and "token" not in listed[0]
    rotated = run_cli("key", "rotate", created["id"], "--grace-hours", "1", "--json")
    assert rotated["replaces"] == created["id"] and rotated["token"] != token and rotated["old_key_expires_at"]
    revoked = run_cli("key", "revoke", rotated["id"], "--json")
    assert revoked["state"] == "revoked"
    assert "only an active key can be rotated" in run_cli("key", "rotate", rotated["id"], ok=False)


@pytest.fixture
def api(database_url):
    with TestClient(create_app(database_url, admin_key=ADMIN)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield client


def test_admin_api_requires_the_master_key(database_url):
    with TestClient(create_app(database_url, admin_key=ADMIN)) as client:
        assert client.get("/admin/tenants").status_code == 401
        wrong = client.get("/admin/tenants", headers={"Authorization": "Bearer sk-bp-a-tenant-token"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/health").status_code == 200


def test_admin_api_tenant_and_key_operations(api):
    created = api.post("/admin/tenants", json={"name": name(), "models": ["gpt-4o"], "budget_usd": "5"})
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert api.get(f"/admin/tenants/{tenant['id']}").json()["allowed_models"] == ["gpt-4o"]
    patched = api.patch(f"/admin/tenants/{tenant['id']}", json={"rpm_limit": 30})
    assert patched.json()["rpm_limit"] == 30 and patched.json()["budget_usd"] == "5.000000"
    assert api.post(f"/admin/tenants/{tenant['id']}/suspend").json()["status"] == "suspended"
    assert api.post(f"/admin/tenants/{tenant['id']}/resume").json()["status"] == "active"
    key = api.post("/admin/keys", json={"tenant": tenant["id"], "expires_in_days": 30})
    assert key.status_code == 201 and key.json()["token"].startswith("sk-bp-")
    assert [k["id"] for k in api.get("/admin/keys", params={"tenant": tenant["id"]}).json()] == [key.json()["id"]]
    rotated = api.post(f"/admin/keys/{key.json()['id']}/rotate", json={"grace_hours": 0})
    assert rotated.json()["replaces"] == key.json()["id"]
    assert api.post(f"/admin/keys/{rotated.json()['id']}/revoke").json()["state"] == "revoked"
    usage = api.get("/admin/usage", params={"tenant": tenant["id"]})
    assert usage.status_code == 200 and usage.json()["models"] == []


def test_admin_api_key_and_end_user_budgets(api):
    tenant = api.post("/admin/tenants", json={"name": name()}).json()
    patched = api.patch(
        f"/admin/tenants/{tenant['id']}", json={"end_user_budget_usd": "5", "end_user_budget_period": "daily"}
    )
    assert patched.json()["end_user_budget_usd"] == "5.000000" and patched.json()["end_user_budget_period"] == "daily"
    key = api.post(
        "/admin/keys", json={"tenant": tenant["id"], "budget_usd": "10", "budget_period": "monthly", "rpm_limit": 60}
    )
    assert key.status_code == 201, key.text
    assert (key.json()["budget_usd"], key.json()["rpm_limit"], key.json()["tpm_limit"]) == ("10.000000", 60, None)
    changed = api.patch(
        f"/admin/keys/{key.json()['id']}", json={"budget_usd": None, "tpm_limit": 20000, "model_rpm": ["gpt-4o=10"]}
    )
    assert (changed.json()["budget_usd"], changed.json()["rpm_limit"], changed.json()["tpm_limit"]) == (None, 60, 20000)
    assert changed.json()["model_limits"] == {"gpt-4o": {"rpm": 10}}
    bad_model = api.patch(f"/admin/keys/{key.json()['id']}", json={"model_tpm": ["gpt-4o"]})
    assert bad_model.status_code == 400 and "MODEL=N" in bad_model.json()["error"]["message"]
    put = api.put(f"/admin/end-users/{tenant['id']}/alice", json={"budget_usd": "20"})
    assert put.status_code == 200 and put.json()["budget_usd"] == "20.000000" and put.json()["budget_period"] is None
    listed = api.get("/admin/end-users", params={"tenant": tenant["id"]}).json()
    assert [(b["end_user"], b["budget_usd"]) for b in listed] == [("alice", "20.000000")]
    bad = api.put(f"/admin/end-users/{tenant['id']}/has space", json={"budget_usd": "1"})
    assert bad.status_code == 400, bad.text
    assert api.delete(f"/admin/end-users/{tenant['id']}/alice").json()["removed"] is True
    assert api.get("/admin/end-users", params={"tenant": tenant["id"]}).json() == []


def test_admin_api_errors_are_openai_style(api):
    bad = api.post("/admin/tenants", json={"name": name(), "budget_usd": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    missing = api.get("/admin/tenants/tn_missing")
    assert missing.status_code == 404 and "no tenant" in missing.json()["error"]["message"]
