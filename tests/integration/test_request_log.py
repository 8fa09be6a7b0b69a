"""The per-request JSON log line, read from the real proxy's stdout."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from billingproxy import db
from billingproxy.metering import replay_files
from testkit.support import REPO, wait_until

SCHEMA = json.loads((REPO / "monitoring" / "request_log.schema.json").read_text())
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def request_lines(proxy, tenant_id: str) -> list[dict]:
    lines = []
    for raw in proxy.output().splitlines():
        if '"litellm_request"' not in raw or tenant_id not in raw:
            continue
        line = json.loads(raw)
        if line.get("message") == "litellm_request" and line.get("tenant_id") == tenant_id:
            lines.append(line)
    return lines


@pytest.fixture
def traffic(proxy, store):
    """Success, failure and streaming requests from one tenant; returns (tenant, token, lines, marker)."""
    tenant = store.create_tenant(f"log-{uuid.uuid4().hex[:8]}")
    token = store.create_key(tenant.id)[1]
    marker = f"secret-prompt-{uuid.uuid4().hex}"
    # Retries cover a kept-alive connection the server closed between tests; the failing call
    # below uses its own client without retries, so it is sent (and logged) exactly once.
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=2)
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": f"{marker} hello"}],
        max_tokens=3,
        extra_headers={"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"},
    )
    once = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        once.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[fault:500]]"}])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": marker}], max_tokens=2, stream=True
    )
    assert [c for c in stream]
    lines = wait_until(lambda: (found := request_lines(proxy, tenant.id)) and len(found) == 3 and found)
    return tenant, token, lines, marker


def test_every_request_line_matches_the_schema(traffic):
    _, _, lines, _ = traffic
    for line in lines:
        jsonschema.validate(line, SCHEMA)
    by_status = {(line["status"], line["stream"]): line for line in lines}
    assert set(by_status) == {("success", False), ("failure", False), ("success", True)}
    failure = by_status[("failure", False)]
    assert (failure["severity"], failure["http_status"], failure["cost_usd"]) == ("ERROR", 500, 0)
    ok = by_status[("success", False)]
    assert ok["severity"] == "INFO" and ok["total_tokens"] == ok["prompt_tokens"] + ok["completion_tokens"]
    assert ok["trace_id"] == TRACE
    assert ok["logging.googleapis.com/labels"] == {"tenant_id": ok["tenant_id"], "model": "gpt-4o"}


def test_the_product_docs_logs_explorer_fields(traffic):
    """jsonPayload.usage.total_tokens, .cost (USD) and .latency (seconds), beside our own fields."""
    _, _, lines, _ = traffic
    for line in lines:
        assert line["usage"] == {
            "prompt_tokens": line["prompt_tokens"],
            "completion_tokens": line["completion_tokens"],
            "total_tokens": line["total_tokens"],
        }
        assert line["cost"] == line["cost_usd"] and isinstance(line["cost"], float)
        assert line["latency"] == line["latency_ms"] / 1000
    ok = next(line for line in lines if line["status"] == "success" and not line["stream"])
    assert ok["usage"]["total_tokens"] > 0 and ok["cost"] > 0


def test_no_prompt_text_or_token_in_the_lines(traffic, proxy):
    _, token, lines, marker = traffic
    for line in lines:
        assert marker not in json.dumps(line) and token not in json.dumps(line)
    assert marker not in proxy.output()


def test_replaying_captured_lines_into_an_empty_database_reproduces_the_rows(traffic, conn, fresh_database, tmp_path):
    tenant, _, lines, _ = traffic
    original = wait_until(
        lambda: (rows := conn.execute(
            "SELECT * FROM litellm_usage WHERE tenant_id = %s ORDER BY request_id", (tenant.id,)
        ).fetchall()) and len(rows) == 3 and rows,
        what="the rows",
    )  # fmt: skip
    exported = Path(tmp_path / "exported.jsonl")
    # `gcloud logging read --format=json` wraps each line in an entry with jsonPayload.
    exported.write_text("\n".join(json.dumps({"jsonPayload": line, "severity": line["severity"]}) for line in lines))
    db.migrate(fresh_database)
    assert replay_files(fresh_database, [exported]) == (3, 3)
    with db.connect(fresh_database) as other:
        rebuilt = other.execute("SELECT * FROM litellm_usage ORDER BY request_id").fetchall()
    skip = {"inserted_at"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in rebuilt] == [
        {k: v for k, v in r.items() if k not in skip} for r in original
    ]


def test_logging_can_be_switched_off(tmp_path, upstream, database_url, store):
    from testkit.support import ProxyProcess, test_config

    proxy = ProxyProcess(
        tmp_path / "nolog",
        test_config(upstream.base_url),
        {"BILLINGPROXY_DATABASE_URL": database_url, "BILLINGPROXY_REQUEST_LOG": "0"},
    ).start()
    try:
        tenant = store.create_tenant(f"nolog-{uuid.uuid4().hex[:8]}")
        token = store.create_key(tenant.id)[1]
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "quiet"}], "max_tokens": 1}
        response = httpx.post(  # a fresh proxy's first request imports the provider path: not 5 s
            proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert response.status_code == 200
        assert request_lines(proxy, tenant.id) == []
    finally:
        proxy.stop()
