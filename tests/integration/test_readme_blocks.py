"""Every command block of the README, run as a user would paste it.

The README is the product's manual: a command in it that does not work as pasted is a bug. Each
fenced ``bash``, ``sql`` and ``python`` block is either run here (line by line, with the README's
``…`` placeholders filled in from what earlier lines printed) or named in ``RUN_ELSEWHERE`` with
the test that runs it; a new block that is in neither fails ``test_every_command_block_is_run``.
Only the outside world is faked: Stripe, Cloud Logging, and Google's CLIs (gcloud, bq) on PATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from billingproxy import db
from billingproxy.metering import request_log
from billingproxy.metering.spill import SpillFile
from testkit.billing import COST_METER, ensure_meters, relay_env, relay_settings, store_usage, usage_records
from testkit.fakes.cloud_logging import FakeCloudLogging, entry_for_line
from testkit.fakes.gcloud import fake_cli
from testkit.support import MASTER_KEY, REPO, free_port, tenant_with_token, wait_until

VENV_BIN = Path(sys.executable).parent
COMMAND_LANGS = {"bash", "sql", "python"}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence, for messages

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        blocks.append(Block(match.group(1), match.group(2), text[: match.start()].count("\n") + 1))
    return blocks


def block_starting(prefix: str) -> Block:
    (block,) = [b for b in readme_blocks() if b.first_line.startswith(prefix)]
    return block


# Blocks run by another test (the first line's start → that test), or not run, with the reason.
RUN_ELSEWHERE = {
    "make run ": "tests/integration/test_devstack.py (make run from a fresh checkout); make test is CI itself",
    "make load ": "tests/integration/test_devstack.py (make load against the make run stack)",
    "set -a; . .data/run.env; set +a ": "tests/integration/test_queries.py (the README psql commands as pasted)",
    "python3 -m venv /tmp/bp-pins": "not run: it rewrites constraints.txt from PyPI and runs the whole suite "
    "and the benchmark (the upgrade procedure itself)",
}
RUN_HERE = {
    "python -m billingproxy db migrate": "test_the_cli_block_runs_line_by_line",
    "from openai import OpenAI": "test_the_quickstart_client_snippet_runs",
    "# A request on behalf of end user alice": "test_the_attribution_snippet_lands_on_the_row",
    "curl -s -X POST $BILLING_SERVICE_URL/admin/tenants": "test_the_admin_api_block_answers_as_documented",
    "SELECT * FROM get_usage_by_customer": "test_the_sql_blocks_run_under_psql",
    "SELECT DATE(start_time)": "test_the_sql_blocks_run_under_psql",
    "-- what is waiting": "test_the_sql_blocks_run_under_psql",
    "PROJECT_ID=my-project TOKEN_SURGE_PER_MIN": "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
    "export PROJECT_ID=my-project": "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
    "gcloud builds submit": "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
    "# e.g. the Cloud Build service account": "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
    'printf %s "$(openssl rand': "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
    'printf %s "$NEW_WHSEC"': "test_the_google_cloud_blocks_run_against_a_fake_gcloud",
}


def test_every_command_block_is_run():
    known = {**RUN_ELSEWHERE, **RUN_HERE}
    for block in readme_blocks():
        if block.lang in COMMAND_LANGS:
            owners = [prefix for prefix in known if block.first_line.startswith(prefix)]
            assert len(owners) == 1, f"README line {block.line}: {block.first_line!r} is run by no test"
    for prefix in known:  # a stale entry (the block changed) must be updated, not kept
        assert sum(b.first_line.startswith(prefix) for b in readme_blocks()) == 1, prefix


def commands(block: Block) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    result, current = [], ""
    for line in block.text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.rstrip().endswith("\\") and current.count("'") % 2 == 0:
            result.append(current.rstrip())
            current = ""
    assert not current, f"unterminated command in README line {block.line}"
    return result


def bash(command: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def user_env(**extra: str) -> dict[str, str]:
    """A shell inside the venv (``python`` is the venv's), as the README's commands assume."""
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO), **extra}


# ---- the CLI block -----------------------------------------------------------------------------

# Exit codes the README documents for a command run against a fresh stack (doctor: the provider
# credentials are unset here, so it reports FAIL and exits 1).
EXPECTED_EXIT = {"doctor": {1}}


def test_the_cli_block_runs_line_by_line(tmp_path, fresh_database, fake_stripe):
    ensure_meters(fake_stripe, relay_settings(fake_stripe))
    fake_stripe.link_customer("cus_123", COST_METER)
    logging_api = FakeCloudLogging().start()
    service_port = free_port()
    env = user_env(
        **{**relay_env(fake_stripe, fresh_database), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        PROXY_MASTER_KEY=MASTER_KEY,
        BILLINGPROXY_CONFIG=str(REPO / "config.yaml"),
        GOOGLE_CLOUD_PROJECT="my-project",
        BILLINGPROXY_CLOUD_LOGGING_ENDPOINT=logging_api.base_url,
    )
    env.pop("OPENAI_API_KEY", None)
    ran: dict[str, subprocess.CompletedProcess] = {}
    try:
        for command in commands(block_starting("python -m billingproxy db migrate")):
            if command.startswith("KEY_ID="):  # the placeholder line: the id key create printed
                assert command.split()[0] == "KEY_ID=key_…"
                env["KEY_ID"] = json.loads(ran["key create"].stdout)["id"]
                continue
            words = command.split()
            name = " ".join(words[3:5]) if words[3] not in ("doctor", "service") else words[3]
            if name == "usage replay":
                tenant_id = json.loads(ran["tenant create"].stdout)["id"]
                if "--from-cloud-logging" in command:
                    add_cloud_logging_entry(logging_api, tenant_id)
                    name = "usage replay cloud"
                else:
                    write_exports(tmp_path, tenant_id)
            if name == "service":
                assert "--port 4001" in command
                run_service(command.replace("--port 4001", f"--port {service_port}"), env, tmp_path, service_port)
                continue
            result = bash(command, env, tmp_path)
            ran.setdefault(name, result)
            assert "Traceback" not in result.stderr + result.stdout, f"{command}\n{result.stderr}"
            assert result.returncode in EXPECTED_EXIT.get(name, {0}), f"{command}\n{result.stdout}\n{result.stderr}"
    finally:
        logging_api.stop()
    assert json.loads(ran["tenant create"].stdout)["name"] == "acme"
    assert "acme" in ran["tenant show"].stdout  # found by the other spelling, ACME
    assert "alice" in ran["end-user list"].stdout and "20.000000" in ran["end-user list"].stdout
    assert json.loads(ran["key create"].stdout)["budget_usd"] is None  # the first; the second has one
    assert "inserted" in ran["usage replay"].stdout and "inserted" in ran["usage replay cloud"].stdout
    assert json.loads(ran["portal link"].stdout)["url"].startswith("http")
    assert "FAIL" in ran["doctor"].stdout and "OPENAI_API_KEY" in ran["doctor"].stdout


def write_exports(cwd: Path, tenant_id: str) -> None:
    """What the replay line reads: a spill file in .data/spill and a `gcloud logging read` export."""
    spilled, exported = usage_records(tenant_id, windows=2, per_window=1)
    spill = SpillFile(cwd / ".data" / "spill")
    spill.append([spilled])
    spill.close()
    entry = entry_for_line(request_log.line(exported, "my-project"), project="my-project")
    (cwd / "exported-logs.json").write_text(json.dumps([entry]))


def add_cloud_logging_entry(logging_api: FakeCloudLogging, tenant_id: str) -> None:
    (record,) = usage_records(tenant_id, windows=1, per_window=1)
    when = datetime(2026, 11, 30, 11, tzinfo=UTC)  # inside the README's --since/--until
    logging_api.add(entry_for_line(request_log.line(record, "my-project"), project="my-project", timestamp=when))


def run_service(command: str, env: dict[str, str], cwd: Path, port: int) -> None:
    """The billing service line: it serves until Ctrl-C (SIGINT), then exits 0."""
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env, cwd=cwd)
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
            timeout=60,
            what="the billing service",
        )
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


# ---- the quickstart client, the admin API, the SQL ----------------------------------------------


def test_the_quickstart_client_snippet_runs(proxy, database_url):
    _, token = tenant_with_token(database_url, "quick")
    snippet = block_starting("from openai import OpenAI").text
    assert "http://127.0.0.1:4000/v1" in snippet and "<DEMO_TOKEN>" in snippet
    snippet = snippet.replace("http://127.0.0.1:4000/v1", proxy.url + "/v1").replace("<DEMO_TOKEN>", token)
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ChatCompletion(") and "usage=CompletionUsage(" in result.stdout


def test_the_attribution_snippet_lands_on_the_row(proxy, database_url):
    tenant_id, token = tenant_with_token(database_url, "attr")
    snippet = block_starting("# A request on behalf of end user alice").text
    snippet = snippet.replace("http://127.0.0.1:4000/v1", proxy.url + "/v1").replace("<DEMO_TOKEN>", token)
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def row():
        with db.connect(database_url) as conn:
            return conn.execute(
                "SELECT end_user, tags FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()

    found = wait_until(row, timeout=30, what="the usage row")
    assert (found["end_user"], found["tags"]) == ("alice@example.com", ["search", "beta"])


def test_the_admin_api_block_answers_as_documented(tmp_path, billing_db):
    port = free_port()
    env = user_env(DATABASE_URL=billing_db, PROXY_MASTER_KEY=MASTER_KEY, BILLING_SERVICE_URL=f"http://127.0.0.1:{port}")
    service = subprocess.Popen(
        [sys.executable, "-m", "billingproxy", "service", "--port", str(port)], env=env, cwd=tmp_path
    )
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, timeout=60)
        block = block_starting("curl -s -X POST $BILLING_SERVICE_URL/admin/tenants")
        documented = [line for line in block.text.splitlines() if re.match(r"# \d{3} ", line)]
        key_id = None
        for command, expected in zip(commands(block), documented, strict=True):
            if key_id:
                command = command.replace("key_…", key_id)
            result = bash(command, env, tmp_path)
            assert result.returncode == 0, result.stderr
            body = json.loads(result.stdout)
            status = int(expected.split()[1])
            if status >= 400:
                message = re.search(r'"message": "([^"]+)"', expected).group(1)
                assert body["error"]["message"] == message, body
            else:
                assert "error" not in body and body["id"].startswith(re.search(r'"id": "(\w+_)', expected).group(1))
            if command.startswith("curl -s -X POST $BILLING_SERVICE_URL/admin/keys "):
                key_id = body["id"]
                assert body["token"].startswith("sk-bp-")
        assert key_id, "the block creates a key"
    finally:
        service.terminate()
        service.wait(30)


def test_the_sql_blocks_run_under_psql(tmp_path, billing_db):
    tenant_id, _ = tenant_with_token(billing_db, "sql", stripe_customer_id="cus_123")
    store_usage(billing_db, usage_records(tenant_id, windows=3, per_window=2))
    for prefix in ("SELECT * FROM get_usage_by_customer", "SELECT DATE(start_time)", "-- what is waiting"):
        script = tmp_path / "block.sql"
        script.write_text(block_starting(prefix).text)
        result = subprocess.run(
            ["psql", billing_db, "-v", "ON_ERROR_STOP=1", "-f", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "ERROR" not in result.stderr, f"{prefix}: {result.stderr}"
        assert "row" in result.stdout  # psql's "(N rows)" footer: the query ran and returned


# ---- Google Cloud: deploy, monitoring, IAM, secret rotation -------------------------------------

GOOGLE_BLOCKS = [
    "PROJECT_ID=my-project TOKEN_SURGE_PER_MIN",
    "export PROJECT_ID=my-project",
    "gcloud builds submit",
    "# e.g. the Cloud Build service account",
    'printf %s "$(openssl rand',
    'printf %s "$NEW_WHSEC"',
]


@pytest.mark.parametrize("prefix", GOOGLE_BLOCKS)
def test_the_google_cloud_blocks_run_against_a_fake_gcloud(tmp_path, prefix):
    """As pasted into a shell at the repository root, with gcloud and bq faked (they log each call)."""
    fake = fake_cli(tmp_path, versions="billingproxy-master-key")
    env = {
        **fake,
        "PATH": f"{fake['PATH']}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PROJECT_ID": "my-project",
        "REGION": "us-central1",
        "CLOUDSQL_INSTANCE": "my-project:us-central1:billing",
        "NEW_WHSEC": "whsec_new",
        "DRY_RUN_DIR": str(tmp_path / "dry-run"),
    }
    block = block_starting(prefix)
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = Path(fake["FAKE_LOG"]).read_text() if Path(fake["FAKE_LOG"]).exists() else ""
    for command in commands(block):
        if command.startswith("gcloud ") or " gcloud " in command:
            verb = " ".join(command[command.index("gcloud ") :].split()[:3])
            assert verb in calls, f"{verb!r} never reached gcloud"
    assert calls, "the block called gcloud"
