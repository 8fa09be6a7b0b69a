"""Attribution below the tenant (issue 19) through the real proxy with the official SDKs: end
users, tags and client request ids land on the row, the log line and the rollup; bad values get
a 400 naming the field, before anything is billed; reports by end user, tag and key equal the
sums of the rows."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billingproxy.cli import main as cli
from billingproxy.metering.reports import attribution_report
from billingproxy.service import create_app
from testkit.support import MASTER_KEY, wait_until


def rows_of(conn, tenant_id: str) -> list[dict]:
    return conn.execute("SELECT * FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time", (tenant_id,)).fetchall()


def log_lines(proxy, tenant_id: str) -> list[dict]:
    found = []
    for raw in proxy.output().splitlines():
        if '"litellm_request"' in raw and tenant_id in raw:
            line = json.loads(raw)
            if line.get("tenant_id") == tenant_id:
                found.append(line)
    return found


@pytest.fixture
def tenant_token(store):
    tenant = store.create_tenant(f"attr-{uuid.uuid4().hex[:10]}")
    key, token = store.create_key(tenant.id)
    return tenant, key, token


@pytest.fixture
def attributed(proxy, conn, store, tenant_token):
    """Four attributed requests over two keys: OpenAI `user` + metadata tags, the headers
    (which win over the body), Anthropic metadata.user_id, and one with no attribution."""
    tenant, key, token = tenant_token
    key2, token2 = store.create_key(tenant.id)
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three"}],
        max_tokens=4,
        user="alice@example.com",
        metadata={"tags": ["search", "beta"]},
        extra_headers={"x-request-id": "client-req-1"},
    )
    oa2 = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token2, max_retries=0)
    oa2.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "four five"}],
        max_tokens=3,
        user="ignored-body-user",
        extra_headers={"X-BillingProxy-End-User": "bob", "X-BillingProxy-Tags": "search, batch"},
    )
    an = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    an.messages.create(
        model="claude-sonnet-4",
        max_tokens=5,
        messages=[{"role": "user", "content": "hello claude friend"}],
        metadata={"user_id": "carol"},
    )
    oa2.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "plain"}], max_tokens=2)
    rows = wait_until(lambda: (found := rows_of(conn, tenant.id)) and len(found) == 4 and found, what="4 rows")
    return tenant, key, key2, rows


def test_end_user_tags_and_client_request_id_land_on_the_row_and_the_log_line(proxy, attributed):
    tenant, key, key2, rows = attributed
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    first, plain = sorted(by_model["gpt-4o"], key=lambda r: r["end_user"] is None)
    assert (first["end_user"], first["tags"], first["client_request_id"]) == (
        "alice@example.com",
        ["search", "beta"],
        "client-req-1",
    )
    assert first["api_key_id"] == key.id
    header_row = by_model["gpt-4o-mini"][0]
    assert (header_row["end_user"], header_row["tags"], header_row["api_key_id"]) == (
        "bob",
        ["search", "batch"],
        key2.id,
    )
    claude = by_model["claude-sonnet-4"][0]
    assert (claude["end_user"], claude["tags"], claude["status"]) == ("carol", [], "success")
    assert (plain["end_user"], plain["tags"], plain["client_request_id"]) == (None, [], None)

    lines = wait_until(lambda: (found := log_lines(proxy, tenant.id)) and len(found) == 4 and found, what="4 lines")
    by_id = {line["request_id"]: line for line in lines}
    for row in rows:
        line = by_id[row["request_id"]]
        assert (line["end_user"], line["tags"], line["client_request_id"], line["api_key_id"]) == (
            row["end_user"],
            row["tags"],
            row["client_request_id"],
            row["api_key_id"],
        )


def _sums(rows, value_of) -> dict[str, tuple[int, Decimal, int]]:
    sums: dict[str, list] = {}
    for row in rows:
        for value in value_of(row):
            entry = sums.setdefault(value, [0, Decimal(0), 0])
            entry[0] += 1
            entry[1] += row["cost_usd"]
            entry[2] += row["total_tokens"]
    return {k: tuple(v) for k, v in sums.items()}


DIMENSIONS = {
    "end_user": lambda row: [row["end_user"]] if row["end_user"] else [],
    "tag": lambda row: row["tags"],
    "key": lambda row: [row["api_key_id"]],
}


@pytest.mark.parametrize("by", sorted(DIMENSIONS))
def test_reports_by_end_user_tag_and_key_equal_the_sums_of_the_rows(conn, attributed, by):
    tenant, _, _, rows = attributed
    day = rows[0]["start_time"].date()
    report = attribution_report(conn, tenant.id, by, day, day + timedelta(days=1))
    got = {r["value"]: (r["requests"], r["cost_usd"], r["total_tokens"]) for r in report.rows}
    assert got == _sums(rows, DIMENSIONS[by])
    assert got  # each dimension has values in this traffic
    assert report.total_cost_usd == sum((v[1] for v in got.values()), start=Decimal(0))


def test_the_cli_and_the_admin_api_report_by_end_user(proxy, conn, attributed, database_url, monkeypatch):
    tenant, _, _, rows = attributed
    monkeypatch.setenv("DATABASE_URL", database_url)
    result = CliRunner().invoke(cli, ["usage", "report", "--tenant", tenant.name, "--by", "end-user", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {r["value"]: r["requests"] for r in data["rows"]} == {"alice@example.com": 1, "bob": 1, "carol": 1}
    assert Decimal(data["total_cost_usd"]) == sum(r["cost_usd"] for r in rows if r["end_user"])
    human = CliRunner().invoke(cli, ["usage", "report", "--tenant", tenant.id, "--by", "tag"])
    assert human.exit_code == 0 and "search" in human.output and "batch" in human.output
    with TestClient(create_app(database_url, admin_key=MASTER_KEY)) as api:
        admin = api.get(
            "/admin/usage",
            params={"tenant": tenant.id, "by": "end_user"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        assert admin.status_code == 200 and admin.json()["rows"] == data["rows"]
        unknown = api.get(
            "/admin/usage",
            params={"tenant": tenant.id, "by": "colour"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        assert unknown.status_code == 400 and "unknown report dimension" in unknown.json()["error"]["message"]
    model = CliRunner().invoke(cli, ["usage", "report", "--tenant", tenant.id, "--by", "model", "--json"])
    assert {r["model"] for r in json.loads(model.output)["models"]} == {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4"}


BAD = [
    ({"user": "x" * 129}, {}, "user"),
    ({"user": "has space"}, {}, "user"),
    ({"metadata": {"tags": ["ok", "bad tag"]}}, {}, "metadata.tags"),
    ({"metadata": {"tags": [f"t{i}" for i in range(17)]}}, {}, "metadata.tags"),
    ({"metadata": {"tags": "notalist"}}, {}, "metadata.tags"),
    ({}, {"X-BillingProxy-End-User": "bob<script>"}, "X-BillingProxy-End-User"),
    ({}, {"X-BillingProxy-Tags": "a," + "b" * 65}, "X-BillingProxy-Tags"),
    ({}, {"x-request-id": "r" * 129}, "x-request-id"),
]


@pytest.mark.parametrize(("body", "headers", "param"), BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_a_malformed_value_is_a_400_naming_the_field_and_nothing_is_billed(
    proxy, conn, tenant_token, body, headers, param
):
    tenant, _, token = tenant_token
    response = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}", **headers},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **body},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_attribution")
    assert param in error["message"]
    # Nothing is billed: a later good request's row is there, and before it at most the refusal,
    # recorded as rejected at zero cost with no attribution (no cut value is ever stored).
    # (With a non-list metadata.tags LiteLLM's own logging of the refusal fails: no rejected row.)
    ok = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=30,
    )
    assert ok.status_code == 200
    rows = wait_until(lambda: [r for r in rows_of(conn, tenant.id) if r["status"] == "success"], what="success row")
    assert [r["model"] for r in rows] == ["demo"]
    others = [
        (r["status"], r["cost_usd"], r["end_user"], r["tags"])
        for r in rows_of(conn, tenant.id)
        if r["status"] != "success"
    ]
    expected = [] if body.get("metadata", {}).get("tags") == "notalist" else [("rejected", 0, None, [])]
    assert others == expected


def test_the_openai_sdk_surfaces_the_param(proxy, tenant_token):
    _, _, token = tenant_token
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], user="a b")
    assert caught.value.param == "user" and caught.value.code == "invalid_attribution"
