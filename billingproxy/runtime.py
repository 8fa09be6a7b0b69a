"""Per-process singletons for the proxy: the DB pool, the authenticator, the price table.

``callbacks/`` files are executed afresh by LiteLLM for every reference in config.yaml, so
shared state lives here, in a normally imported module: one instance per worker process.
Everything is created lazily inside the running event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from billingproxy import log_redaction, logs, request_log, shutdown
from billingproxy.auth import Authenticator
from billingproxy.budget import BudgetManager, BudgetStore
from billingproxy.budget_store import PostgresBudgetStore
from billingproxy.keystore import KeyStore
from billingproxy.pricing import PriceTable
from billingproxy.settings import AuthSettings, WriterSettings, database_url, master_key
from billingproxy.usage import UsageRecord, record_from_payload
from billingproxy.writer import UsageWriter

logs.configure()  # our operational lines are JSON on stdout, like the request lines
log_redaction.install()  # LiteLLM's error lines must not carry provider text quoting prompts

_pool: AsyncConnectionPool | None = None
_pool_lock: asyncio.Lock | None = None
_authenticator: Authenticator | None = None
_prices: PriceTable | None = None


def pool() -> AsyncConnectionPool:
    """The process's async pool. Opened in the background: callers wait per connection."""
    global _pool
    if _pool is None:
        _pool = AsyncConnectionPool(
            database_url(),
            min_size=1,
            max_size=4,
            open=False,
            timeout=2.0,
            reconnect_timeout=0,  # keep retrying forever in the background during an outage
            kwargs={"connect_timeout": 2, "application_name": "billingproxy-proxy", "row_factory": dict_row},
        )
    return _pool


async def opened_pool() -> AsyncConnectionPool:
    global _pool_lock
    p = pool()
    if p.closed:
        _pool_lock = _pool_lock or asyncio.Lock()
        async with _pool_lock:
            if p.closed:
                await p.open(wait=False)
    return p


def authenticator() -> Authenticator:
    global _authenticator
    if _authenticator is None:
        store = KeyStore(pool())

        async def lookup_key(key_hash: str):
            await opened_pool()
            return await store.lookup_key(key_hash)

        async def lookup_tenant(ref: str):
            await opened_pool()
            return await store.lookup_tenant(ref)

        _authenticator = Authenticator(
            AuthSettings.from_env(),
            lookup_key=lookup_key,
            lookup_tenant=lookup_tenant,
            master_key=master_key(),
        )
    return _authenticator


def prices() -> PriceTable:
    global _prices
    if _prices is None:
        _prices = PriceTable.from_config()
    return _prices


_writer: UsageWriter | None = None
# Off only for benchmarks that measure the writer's cost; production always writes.
_WRITE_USAGE = os.environ.get("BILLINGPROXY_WRITE_USAGE", "1") != "0"
# Response-cache hits are free by default; "full" bills them like a provider call.
_BILL_CACHE_HITS = os.environ.get("BILLINGPROXY_CACHE_HIT_POLICY", "free") == "full"


def writer() -> UsageWriter:
    """The process's usage writer, started on first use inside the running loop."""
    global _writer
    if _writer is None:
        _writer = UsageWriter(database_url(), WriterSettings.from_env())
        _writer.start()
        shutdown.on_exit("usage-writer", _close_writer, order=10)
        shutdown.install()
    return _writer


async def _close_writer() -> None:
    """At exit: write what is left within the deadline, spill the rest."""
    if _writer is not None:
        _writer.close()


def record_usage(payload: dict, **outcome) -> UsageRecord | None:
    """Build the request's usage record, settle its budget reservation and queue the record."""
    record = record_from_payload(payload, prices(), bill_cache_hits=_BILL_CACHE_HITS, **outcome)
    if record is not None:
        budgets().settle(record.request_id, record.cost_usd)
        request_log.emit(record)
        if _WRITE_USAGE:
            writer().submit(record)
    return record


_budgets: BudgetManager | None = None


def budgets() -> BudgetManager:
    """The process's budget manager; its background task reports spend and renews slices."""
    global _budgets
    if _budgets is None:
        holder = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        webhook = os.environ.get("BILLINGPROXY_BUDGET_WEBHOOK_URL") or None
        _budgets = BudgetManager(_budget_store(), holder, webhook_url=webhook)
        # At exit nothing more is needed: spend is also derived from the usage rows the writer
        # flushes, and this instance's slices expire within the lease TTL.
        asyncio.get_running_loop().create_task(_run_budgets(_budgets), name="billingproxy-budgets")
    return _budgets


def _budget_store() -> BudgetStore:
    """PostgreSQL by default; Redis (atomic scripts) when BILLINGPROXY_BUDGET_STORE=redis."""
    kind = os.environ.get("BILLINGPROXY_BUDGET_STORE", "postgres")
    if kind == "redis":
        import redis.asyncio as aioredis

        from billingproxy.budget_redis import RedisBudgetStore

        url = os.environ.get("BILLINGPROXY_REDIS_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        return RedisBudgetStore(aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2), pool())
    if kind != "postgres":
        raise ValueError(f"BILLINGPROXY_BUDGET_STORE must be postgres or redis, got {kind!r}")
    return PostgresBudgetStore(pool())


async def _run_budgets(manager: BudgetManager) -> None:
    await opened_pool()
    await manager.run()
