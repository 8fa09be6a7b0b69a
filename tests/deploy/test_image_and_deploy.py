"""The container's exact commands, run directly on this machine, and the deploy script's dry run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.support import MASTER_KEY, REPO, dockerfile_final_stage, free_port, test_config, wait_until

VENV = Path(sys.executable).parent.parent


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def test_image_environment_is_pinned_and_secret_free():
    env, cmd = dockerfile_final_stage()
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True" and env["PYTHONPATH"] == str(REPO)
    assert cmd[:2] == ["sh", "-c"] and "litellm --config" in cmd[2] and "--port" in cmd[2] and "${PORT}" in cmd[2]
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M), "base pinned to an exact tag"
    assert "USER 10001" in text
    assert not re.search(r"(API_KEY|MASTER_KEY|PASSWORD|SECRET)\s*=", text), "no secrets in the image"


def test_the_images_exact_cmd_serves_health_and_a_completion(tmp_path, upstream, database_url):
    env, cmd = dockerfile_final_stage()
    workdir = tmp_path / "app-config"
    workdir.mkdir()
    (workdir / "callbacks").symlink_to(REPO / "callbacks")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(test_config(upstream.base_url)))
    port = free_port()
    env.update(
        PORT=str(port),
        BILLINGPROXY_LITELLM_CONFIG=str(config),
        BILLINGPROXY_CONFIG=str(config),
        BILLINGPROXY_DATABASE_URL=database_url,
        PROXY_MASTER_KEY=MASTER_KEY,
        BILLINGPROXY_SPILL_DIR=str(tmp_path / "spill"),
    )
    process = start(cmd, env, tmp_path / "proxy.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/health/liveliness", timeout=1).status_code == 200, timeout=90)
        with db.connect(database_url) as conn:
            store = TenantStore(conn)
            token = store.create_key(store.create_tenant(f"img-{uuid.uuid4().hex[:8]}").id)[1]
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from the image"}], "max_tokens": 2}
        response = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "w0 w1"
    finally:
        process.terminate()
        process.wait(30)


def test_billing_service_and_migration_commands_run_from_the_image(tmp_path, fresh_database):
    env, _ = dockerfile_final_stage()
    env.update(DATABASE_URL=fresh_database, PROXY_MASTER_KEY=MASTER_KEY)
    migrate = subprocess.run(
        ["python", "-m", "billingproxy", "db", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0 and "applied 0001_tenants_and_keys.sql" in migrate.stdout, migrate.stderr
    port = free_port()
    service = start(
        ["python", "-m", "billingproxy", "service", "--host", "0.0.0.0"],
        {**env, "PORT": str(port)},
        tmp_path / "svc.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, timeout=60)
        tenants = httpx.get(url + "/admin/tenants", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert tenants.status_code == 200 and tenants.json() == []
    finally:
        service.terminate()
        service.wait(30)


def test_stripe_relay_job_command_runs_from_the_image(fresh_database):
    """The relay job's exact command (one pass), against the fake Stripe; exit 0 and a JSON summary."""
    from testkit.billing import ensure_meters, relay_env, relay_settings, store_usage, usage_records
    from testkit.fakes.stripe_api import FakeStripe

    db.migrate(fresh_database)
    with db.connect(fresh_database) as conn:
        tenant = TenantStore(conn).create_tenant("relay-job", stripe_customer_id="cus_relayjob")
    store_usage(fresh_database, usage_records(tenant.id, windows=2, per_window=2))
    env, _ = dockerfile_final_stage()
    fake = FakeStripe().start()
    ensure_meters(fake, relay_settings(fake))  # the relay holds entries for a meter Stripe lacks
    try:
        relay_vars = {k: v for k, v in relay_env(fake, fresh_database).items() if k not in os.environ}
        result = subprocess.run(
            ["python", "-m", "billingproxy", "stripe", "relay", "--json"],
            cwd=REPO,
            env={**env, **relay_vars, "DATABASE_URL": fresh_database, "STRIPE_API_BASE": fake.base_url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 2 and len(fake.events) == 2


SECRET_VALUES = {
    "PROXY_MASTER_KEY": "master-value-must-not-print-1",
    "OPENAI_API_KEY": "openai-value-must-not-print-2",
    "DATABASE_URL": "postgresql://u:password-must-not-print-3@/db",
    "STRIPE_API_KEY": "stripe-value-must-not-print-4",
    "ANTHROPIC_API_KEY": "anthropic-value-must-not-print-5",
}


@pytest.fixture(scope="module")
def dry_run() -> str:
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "PROJECT_ID": "proj-x", "CLOUDSQL_INSTANCE": "proj-x:r:sql"}
    env.update(SECRET_VALUES)
    result = subprocess.run(
        [str(REPO / "deploy" / "deploy.sh"), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def proxy_deploy(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("gcloud run deploy litellm-proxy ")]
    return line


def test_deploy_dry_run_sets_the_flags_that_matter(dry_run):
    line = proxy_deploy(dry_run)
    for flag in ("--concurrency 15", "--min-instances 1", "--max-instances 50", "--cpu 1", "--memory 1Gi",
                 "--no-cpu-throttling", "--timeout 900", "--set-cloudsql-instances proj-x:r:sql"):  # fmt: skip
        assert flag in line, flag
    secrets = re.search(r"--set-secrets (\S+)", line)[1].replace("\\,", ",").split(",")
    assert {s.split("=")[0] for s in secrets} == {
        "BILLINGPROXY_DATABASE_URL", "PROXY_MASTER_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
    }  # fmt: skip
    assert all(s.endswith(":latest") for s in secrets)
    assert "DATABASE_URL=" not in line.replace("BILLINGPROXY_DATABASE_URL=", "")  # LiteLLM must not see it
    assert "gcloud run jobs execute billingproxy-migrate" in dry_run
    assert "gcloud run deploy billing-service" in dry_run
    relay = next(
        line for line in dry_run.splitlines() if line.startswith("gcloud run jobs deploy billingproxy-stripe-relay")
    )
    check = next(
        line for line in dry_run.splitlines() if line.startswith("gcloud run jobs deploy billingproxy-stripe-check")
    )
    assert "stripe\\,check" in check or "stripe,check" in check
    assert "gcloud run jobs execute billingproxy-stripe-check" in dry_run  # run, and awaited, at every deploy
    assert "--args=-m\\,billingproxy\\,stripe\\,relay" in relay or "--args=-m,billingproxy,stripe,relay" in relay
    assert "STRIPE_API_KEY=stripe-api-key:latest" in relay.replace("\\", "")
    schedule = next(line for line in dry_run.splitlines() if line.startswith("gcloud scheduler jobs create http"))
    assert "jobs/billingproxy-stripe-relay:run" in schedule and "--oauth-service-account-email" in schedule
    assert "gcloud logging metrics create litellm_total_tokens" in dry_run  # monitoring applied too


def test_deploy_dry_run_prints_no_secret_value(dry_run):
    for value in SECRET_VALUES.values():
        assert value not in dry_run
    assert 'printf %s "$PROXY_MASTER_KEY" | gcloud secrets versions add billingproxy-master-key' in dry_run


def test_cloudbuild_deploys_with_the_same_flags():
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    steps = {step["id"]: step for step in build["steps"]}
    assert list(steps) == [
        "test", "build", "push", "migrate", "stripe-check", "deploy-proxy", "deploy-billing-service",
        "deploy-stripe-relay",
    ]  # fmt: skip
    assert "--args=-m,billingproxy,stripe,check" in steps["stripe-check"]["args"][-1]
    relay = steps["deploy-stripe-relay"]["args"][-1]
    assert "--args=-m,billingproxy,stripe,relay" in relay and "gcloud scheduler jobs $$verb http" in relay
    proxy = steps["deploy-proxy"]["args"][-1]
    for flag in ("--concurrency=15", "--min-instances=1", "--max-instances=50", "--no-cpu-throttling", "--cpu=1",
                 "--memory=1Gi", "--timeout=900"):  # fmt: skip
        assert f" {flag} " in proxy, flag
    assert '--set-secrets="$$(deploy/secret_mounts.sh ${PROJECT_ID} BILLINGPROXY_DATABASE_URL=' in proxy
    assert "make test" in steps["test"]["args"][-1]
