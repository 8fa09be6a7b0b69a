"""A database restart costs no failed request once PostgreSQL accepts connections again.

The restart kills every pooled connection. The pools check a connection before lending it
(``check=AsyncConnectionPool.check_connection``), so the first lookups after the restart get a
fresh connection instead of a dead one (which LiteLLM would turn into a 503)."""

from __future__ import annotations

import concurrent.futures as futures

import psycopg

from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.support import tenant_with_token, wait_until
from tests.integration.test_durability import chat, start_proxy, usage_ids


def accepts_connections(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


def test_a_database_restart_costs_no_failed_request_once_it_is_back(tmp_path, upstream, private_pg, private_db):
    warm_tenant, warm = tenant_with_token(private_db, "restart")
    budgeted_tenant, budgeted = tenant_with_token(private_db, "restart-budget", budget_usd="100")
    proxy = start_proxy(tmp_path, upstream, private_db)
    try:
        # The pool holds live connections. Nothing uses it in the background until a budgeted tenant
        # holds a slice (the renewal loop would replace dead connections first): the budgeted tenant's
        # first request comes after the restart, so the requests below meet the dead connections.
        assert chat(proxy, warm).status_code == 200
        wait_until(lambda: len(usage_ids(private_db, warm_tenant)) == 1, what="the first row")

        private_pg.stop()
        private_pg.start()
        wait_until(lambda: accepts_connections(private_db), timeout=30, what="PostgreSQL accepting connections")
        with db.connect(private_db) as conn:  # a key the proxy has never seen: its lookup needs the pool
            cold = TenantStore(conn).create_key(warm_tenant)[1]

        # Right away, past the 1 s auth cache TTL: revalidations, a first lookup, budget refills.
        tokens = [warm, budgeted, cold] * 10
        with futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda token: chat(proxy, token), tokens))
        failed = [(a.status_code, a.text[:200]) for a in answers if a.status_code != 200]
        assert failed == []
        wait_until(
            lambda: len(usage_ids(private_db, warm_tenant)) == 21 and len(usage_ids(private_db, budgeted_tenant)) == 10,
            timeout=60,
            what="every row after the restart",
        )
    finally:
        proxy.stop()
