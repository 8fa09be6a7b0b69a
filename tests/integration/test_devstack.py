"""``make run`` as a user runs it, in a copy of the repository (its own .data/, the same venv):
taken ports are an error before anything starts, SIGINT stops a background run, and a run after
sourcing .data/run.env works. Also: the billing service warns at start without a master key."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.support import REPO, free_port, wait_until

VENV = Path(sys.executable).parent.parent
BANNER = "BillingProxy is running"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The repository's files without .git/.venv/.data, with the test's venv linked in."""
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".git", ".venv", ".data", "__pycache__", ".pytest_cache", ".ruff_cache", "bench")
    shutil.copytree(REPO, copy, ignore=ignore)
    (copy / ".venv").symlink_to(VENV)
    return copy


def make_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROXY_MASTER_KEY", "LITELLM_MASTER_KEY")}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def ignore_sigint() -> None:
    """What a non-interactive shell does to a job it starts with '&'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=ignore_sigint,
    )  # fmt: skip


def interrupt(process: subprocess.Popen, log: Path) -> int:
    """kill -INT on the background job (its process group), then its exit code within 60 s."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("make run ignored SIGINT:\n" + log.read_text()[-3000:]) from None


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("taken", ["proxy", "service"])
def test_taken_ports_fail_fast_naming_the_port_and_leave_run_env_alone(checkout, taken):
    port, service_port = free_port(), free_port()
    data = checkout / ".data"
    data.mkdir()
    (data / "run.env").write_text("PROXY_URL=http://127.0.0.1:1\n")
    holder = socket.socket()
    holder.bind(("127.0.0.1", port if taken == "proxy" else service_port))
    holder.listen()
    try:
        began = time.monotonic()
        result = subprocess.run(
            ["make", "run"], cwd=checkout, env=make_env(PORT=str(port), BILLING_SERVICE_PORT=str(service_port)),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        elapsed = time.monotonic() - began
    finally:
        holder.close()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < 15, elapsed
    named = port if taken == "proxy" else service_port
    assert f"port {named} " in output and "already in use" in output, output
    assert "Traceback" not in output and BANNER not in output
    assert (data / "run.env").read_text() == "PROXY_URL=http://127.0.0.1:1\n"
    assert not (data / "pg").exists(), "nothing may start before the ports are checked"


def test_an_unreachable_database_url_is_one_line_not_a_traceback(checkout):
    env = make_env(PORT=str(free_port()), BILLING_SERVICE_PORT=str(free_port()),
                   DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/nothing")  # fmt: skip
    result = subprocess.run(["make", "run"], cwd=checkout, env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output
    assert "[make run] cannot connect to DATABASE_URL" in output and "unset DATABASE_URL" in output
    assert not (checkout / ".data" / "run.env").exists()


@pytest.mark.slow
def test_background_run_stops_on_sigint_and_a_sourced_run_env_starts_again(checkout, tmp_path):
    port, service_port = free_port(), free_port()
    env = make_env(PORT=str(port), BILLING_SERVICE_PORT=str(service_port))
    run_env = checkout / ".data" / "run.env"

    def up(cmd: list[str], log: Path) -> subprocess.Popen:
        process = start(cmd, checkout, env, log)
        wait_until(
            lambda: BANNER in log.read_text() or process.poll() is not None, timeout=180, interval=0.2, what="banner"
        )
        assert process.poll() is None and BANNER in log.read_text(), log.read_text()[-3000:]
        return process

    first_log = tmp_path / "first.log"
    first = up(["make", "run"], first_log)
    try:
        values = dict(line.split("=", 1) for line in run_env.read_text().splitlines() if not line.startswith("#"))
        assert {"DATABASE_URL", "PROXY_URL", "BILLING_SERVICE_URL", "DEMO_TOKEN", "PROXY_MASTER_KEY"} <= set(values)
        assert "MASTER_KEY" not in values
        assert values["PROXY_URL"] == f"http://127.0.0.1:{port}"
        admin = httpx.get(
            values["BILLING_SERVICE_URL"] + "/admin/tenants",
            headers={"Authorization": f"Bearer {values['PROXY_MASTER_KEY']}"},
        )
        assert admin.status_code == 200 and [t["name"] for t in admin.json()] == ["demo"]
        chat = httpx.post(
            values["PROXY_URL"] + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {values['DEMO_TOKEN']}"},
            json={"model": "demo", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=30,
        )
        assert chat.status_code == 200, chat.text
        # make load: the locust mix against this stack, bounded in time, no failure
        load = subprocess.run(
            ["make", "load", "LOAD_SECONDS=4"], cwd=checkout, env=env, capture_output=True, text=True, timeout=120
        )
        assert load.returncode == 0, load.stdout[-3000:] + load.stderr[-3000:]
        summary = load.stdout + load.stderr
        aggregated = next(line for line in summary.splitlines() if line.strip().startswith("Aggregated"))
        requests, failures = (int(n) for n in re.findall(r"\s(\d+)\s+(\d+)\(", aggregated)[0])
        assert requests > 0 and failures == 0, aggregated
    finally:
        code = interrupt(first, first_log)
    assert code == 0, first_log.read_text()[-3000:]
    assert "stopped; data kept" in first_log.read_text()
    assert port_free(port) and port_free(service_port)

    # The README's advice, then make run again in the same shell: DATABASE_URL is now set.
    second_log = tmp_path / "second.log"
    second = up(["bash", "-c", "set -a; . .data/run.env; set +a; exec make run"], second_log)
    try:
        assert "Traceback" not in second_log.read_text()
        assert "using the PostgreSQL in DATABASE_URL" not in second_log.read_text()  # the embedded one again
    finally:
        code = interrupt(second, second_log)
    assert code == 0, second_log.read_text()[-3000:]


def test_billing_service_warns_at_start_without_a_master_key(tmp_path, database_url):
    port = free_port()
    log = tmp_path / "service.log"
    env = make_env(DATABASE_URL=database_url, PORT=str(port), PYTHONPATH=str(REPO))
    process = start([sys.executable, "-m", "billingproxy", "service"], REPO, env, log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, timeout=60)
        assert "WARNING: PROXY_MASTER_KEY (or LITELLM_MASTER_KEY) is not set" in log.read_text()
    finally:
        process.terminate()
        process.wait(30)
