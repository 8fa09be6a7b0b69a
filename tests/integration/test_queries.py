"""Each billing query in db/queries/ against fixture rows with exact expected totals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from billingproxy import db
from billingproxy.cli import main as cli
from billingproxy.metering import UsageRecord, replay_records
from billingproxy.metering import reports as queries
from billingproxy.tenants import TenantStore

T0 = datetime(2026, 10, 30, 23, 0, tzinfo=UTC)  # spans a month boundary on purpose


def record(n: int, tenant: str, model: str, cost: str, when: datetime, status: str = "success", customer=None):
    return UsageRecord.from_json(
        dict(
            request_id=f"req-{n}",
            tenant_id=tenant,
            api_key_id="key_x",
            model=model,
            model_group=model,
            provider="openai",
            call_type="acompletion",
            prompt_tokens=10 * n,
            completion_tokens=n,
            cached_tokens=0,
            reasoning_tokens=0,
            total_tokens=11 * n,
            cost_usd=Decimal(cost),
            latency_ms=100,
            status=status,
            http_status=200 if status == "success" else 500,
            error_type=None if status == "success" else "InternalServerError",
            stream=False,
            cache_hit=False,
            customer_id=customer,
            trace_id=None,
            start_time=when,
            end_time=when,
        )
    )


@pytest.fixture(scope="module")
def fixture_db(pg_server):
    from testkit.support import create_database, drop_database

    url = create_database(pg_server)
    db.migrate(url)
    with db.connect(url) as conn:
        store = TenantStore(conn)
        a = store.create_tenant("alpha", stripe_customer_id="cus_alpha")
        b = store.create_tenant("beta")
    oct30, oct31, nov1 = T0, T0.replace(day=31), datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    rows = [
        record(1, a.id, "gpt-4o", "0.0100000000", oct30, customer="cus_alpha"),
        record(2, a.id, "gpt-4o", "0.0200000000", oct31, customer="cus_alpha"),
        record(3, a.id, "gpt-4o-mini", "0.0005000000", oct31, customer="cus_alpha"),
        record(4, a.id, "gpt-4o-mini", "0", oct31, status="failure", customer="cus_alpha"),
        record(5, a.id, "gpt-4o", "0.0400000000", nov1, customer="cus_alpha"),
        record(6, b.id, "gpt-4o", "0.1000000000", oct31),
        record(7, b.id, "gpt-4o", "0", nov1, status="failure"),
        record(8, b.id, "claude-sonnet-4", "0.0030000000", nov1),
    ]
    assert replay_records(url, rows) == (8, 8)
    yield url, a.id, b.id
    drop_database(pg_server, url)


def run(url, name, **params):
    with db.connect(url) as conn:
        return queries.run(conn, name, **params)


OCT = {"from": datetime(2026, 10, 1, tzinfo=UTC), "to": datetime(2026, 11, 1, tzinfo=UTC)}
ALL = {"from": datetime(2026, 10, 1, tzinfo=UTC), "to": datetime(2026, 12, 1, tzinfo=UTC)}


def test_every_query_file_is_covered():
    assert set(queries.names()) == {
        "daily_cost_by_model",
        "tenant_monthly_totals",
        "tenant_model_breakdown",
        "top_tenants_by_cost",
        "error_rate_by_model",
        "usage_by_customer",
    }


def test_daily_cost_by_model(fixture_db):
    url, _, _ = fixture_db
    got = {
        (str(r["day"]), r["model"]): (r["requests"], r["tokens"], r["total_cost"])
        for r in run(url, "daily_cost_by_model", **ALL)
    }
    assert got == {
        ("2026-10-30", "gpt-4o"): (1, 11, Decimal("0.01")),
        ("2026-10-31", "gpt-4o"): (2, 22 + 66, Decimal("0.12")),
        ("2026-10-31", "gpt-4o-mini"): (2, 33 + 44, Decimal("0.0005")),
        ("2026-11-01", "gpt-4o"): (2, 55 + 77, Decimal("0.04")),
        ("2026-11-01", "claude-sonnet-4"): (1, 88, Decimal("0.003")),
    }


def test_tenant_monthly_totals(fixture_db):
    url, a, b = fixture_db
    got = {
        (r["tenant_id"], str(r["month"])): (r["requests"], r["failures"], r["cost_usd"])
        for r in run(url, "tenant_monthly_totals", **ALL)
    }
    assert got == {
        (a, "2026-10-01"): (4, 1, Decimal("0.0305")),
        (a, "2026-11-01"): (1, 0, Decimal("0.04")),
        (b, "2026-10-01"): (1, 0, Decimal("0.1")),
        (b, "2026-11-01"): (2, 1, Decimal("0.003")),
    }


def test_tenant_model_breakdown_for_an_invoice_period(fixture_db):
    url, a, _ = fixture_db
    rows = run(url, "tenant_model_breakdown", tenant_id=a, **OCT)
    assert [(r["model"], r["requests"], r["failures"], r["prompt_tokens"], r["cost_usd"]) for r in rows] == [
        ("gpt-4o", 2, 0, 30, Decimal("0.03")),
        ("gpt-4o-mini", 2, 1, 70, Decimal("0.0005")),
    ]


def test_top_tenants_by_cost(fixture_db):
    url, a, b = fixture_db
    rows = run(url, "top_tenants_by_cost", limit=1, **ALL)
    assert [(r["tenant_id"], r["tenant_name"], r["cost_usd"]) for r in rows] == [(b, "beta", Decimal("0.103"))]
    rows = run(url, "top_tenants_by_cost", limit=10, **ALL)
    assert [(r["tenant_id"], r["cost_usd"]) for r in rows] == [(b, Decimal("0.103")), (a, Decimal("0.0705"))]


def test_error_rate_by_model(fixture_db):
    url, _, _ = fixture_db
    got = {r["model"]: (r["requests"], r["failures"], r["error_rate"]) for r in run(url, "error_rate_by_model", **ALL)}
    assert got == {
        "gpt-4o": (5, 1, Decimal("0.2000")),
        "gpt-4o-mini": (2, 1, Decimal("0.5000")),
        "claude-sonnet-4": (1, 0, Decimal("0.0000")),
    }


def test_get_usage_by_customer_function(fixture_db):
    url, _, _ = fixture_db
    rows = run(url, "usage_by_customer", customer_id="cus_alpha", **ALL)
    assert [(r["model"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("gpt-4o", 3, Decimal("0.07")),
        ("gpt-4o-mini", 2, Decimal("0.0005")),
    ]
    assert run(url, "usage_by_customer", customer_id="cus_nobody", **ALL) == []


def test_daily_rollup_matches_the_rows(fixture_db):
    url, _, _ = fixture_db
    with db.connect(url) as conn:
        rollup = conn.execute(
            "SELECT sum(cost_usd) c, sum(requests) n, sum(total_tokens) t FROM usage_daily"
        ).fetchone()
        rows = conn.execute("SELECT sum(cost_usd) c, count(*) n, sum(total_tokens) t FROM litellm_usage").fetchone()
    assert (rollup["c"], rollup["n"], rollup["t"]) == (rows["c"], rows["n"], rows["t"]) == (Decimal("0.1735"), 8, 396)


def test_usage_report_cli_prints_the_breakdown(fixture_db, monkeypatch):
    url, a, _ = fixture_db
    monkeypatch.setenv("DATABASE_URL", url)
    args = ["usage", "report", "--tenant", "alpha", "--from", "2026-10-01", "--to", "2026-11-01"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tenant_id"] == a and data["total_cost_usd"] == "0.0305000000"
    assert [m["model"] for m in data["models"]] == ["gpt-4o", "gpt-4o-mini"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and "gpt-4o-mini" in table.output and "0.0305" in table.output
    bad = CliRunner().invoke(
        cli, ["usage", "report", "--tenant", "alpha", "--from", "2026-11-01", "--to", "2026-10-01"]
    )
    assert bad.exit_code != 0 and "--to must be after --from" in bad.output


def test_replaying_a_partly_stored_batch_inserts_and_rolls_up_only_the_new_rows(fresh_database):
    db.migrate(fresh_database)
    day = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    first = [record(n, "tn_r", "gpt-4o", "0.0010000000", day) for n in range(1, 4)]
    more = [record(n, "tn_r", "gpt-4o", "0.0010000000", day) for n in range(3, 7)]  # req-3 is a repeat
    assert replay_records(fresh_database, first) == (3, 3)  # fast path: straight COPY
    assert replay_records(fresh_database, more + more) == (8, 3)  # fallback: only req-4..6 are new
    with db.connect(fresh_database) as conn:
        rows = conn.execute("SELECT count(*) AS n, sum(cost_usd) AS c FROM litellm_usage").fetchone()
        rollup = conn.execute("SELECT requests, cost_usd FROM usage_daily WHERE tenant_id = 'tn_r'").fetchone()
    assert (rows["n"], rows["c"]) == (6, Decimal("0.006"))
    assert (rollup["requests"], rollup["cost_usd"]) == (6, Decimal("0.006"))
