"""Per-process singletons for the proxy: settings, the DB pool, the authenticator, the price
table, the usage writer and the budget manager.

``callbacks/`` files are executed afresh by LiteLLM for every reference in config.yaml, so
shared state lives here, in a normally imported module: one instance per worker process.
Pools, tasks and threads are created lazily inside the running event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from functools import cache

import psycopg
from psycopg_pool import AsyncConnectionPool

from billingproxy import db, shutdown
from billingproxy.access import Authenticator, KeyStore
from billingproxy.access.follow import follow as follow_auth
from billingproxy.budgets import BudgetManager, BudgetStore, PostgresBudgetStore, call_in, threshold_webhook
from billingproxy.config import AuthSettings, ProxySettings, WriterSettings, database_url, master_key
from billingproxy.metering import PriceTable, UsageWriter
from billingproxy.prices import PriceBook, follow
from billingproxy.proxy.catalog import ModelCatalog

__all__ = [
    "authenticator",
    "budgets",
    "catalog",
    "opened_pool",
    "pool",
    "price_book",
    "prices",
    "settings",
    "writer",
]
_log = logging.getLogger("billingproxy.prices")


@cache
def settings() -> ProxySettings:
    return ProxySettings.from_env()


@cache
def prices() -> PriceTable:
    return PriceTable.from_config()


@cache
def _price_book() -> PriceBook:
    """The schedule from PostgreSQL, loaded once at start (blocking, before the first request).
    If the database cannot be reached then, config.yaml's prices bill provisionally (rows carry
    no version id) until the follower loads the schedule."""
    try:
        with psycopg.connect(database_url(), connect_timeout=5) as conn:
            book = PriceBook()
            book.load(conn)
            return book
    except Exception as exc:  # noqa: BLE001 - start anyway; the follower retries
        _log.warning("price book not loaded at start (%s): billing from config.yaml until it is", type(exc).__name__)
        return PriceBook.from_config()


_follower: asyncio.Task | None = None


def price_book() -> PriceBook:
    """The process's price book; its LISTEN/poll follower starts with the first call in the loop."""
    global _follower
    book = _price_book()
    if _follower is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return book
        _follower = loop.create_task(follow(book, database_url(), settings().prices_poll_s), name="billingproxy-prices")
    return book


@cache
def catalog() -> ModelCatalog:
    return ModelCatalog.from_config()


@cache
def pool() -> AsyncConnectionPool:
    """The process's async pool. Opened in the background: callers wait per connection."""
    # 8: a burst may refill several budget scopes at once (tenant, key, end users), each one
    # round trip; connections beyond the first open only when needed.
    return db.async_pool(database_url(), application_name="billingproxy-proxy", max_size=8)


_pool_lock: asyncio.Lock | None = None


async def opened_pool() -> AsyncConnectionPool:
    global _pool_lock
    p = pool()
    if p.closed:
        _pool_lock = _pool_lock or asyncio.Lock()
        async with _pool_lock:
            if p.closed:
                await p.open(wait=False)
    return p


_auth_follower: asyncio.Task | None = None


def authenticator() -> Authenticator:
    """The process's authenticator; its LISTEN follower (changes from every writer) starts with
    the first call inside the loop."""
    global _auth_follower
    auth = _authenticator()
    if _auth_follower is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return auth
        _auth_follower = loop.create_task(follow_auth(auth, database_url()), name="billingproxy-auth")
    return auth


@cache
def _authenticator() -> Authenticator:
    store = KeyStore(pool())

    async def lookup_key(key_hash: str):
        await opened_pool()
        return await store.lookup_key(key_hash)

    async def lookup_tenant(ref: str):
        await opened_pool()
        return await store.lookup_tenant(ref)

    return Authenticator(
        AuthSettings.from_env(), lookup_key=lookup_key, lookup_tenant=lookup_tenant, master_key=master_key()
    )


@cache
def writer() -> UsageWriter:
    """The process's usage writer, started on first use inside the running loop."""
    usage_writer = UsageWriter(database_url(), WriterSettings.from_env())
    usage_writer.start()
    shutdown.on_exit("usage-writer", _close_writer, order=10)
    shutdown.install(settings().shutdown_grace_s)
    return usage_writer


async def _close_writer() -> None:
    """At exit: write what is left within the deadline, spill the rest."""
    # After SIGTERM, what is left of the exit budget (at least 1 s); the rest is spilled.
    writer().close(shutdown.drain_timeout(WriterSettings.from_env().shutdown_deadline_s, floor_s=1.0))


_budget_tasks: list[asyncio.Task] = []


@cache
def instance_id() -> str:
    """This process: its budget leases' holder, named on its admitted lines (``usage audit``
    releases a killed instance's budget doubt by it)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@cache
def budgets() -> BudgetManager:
    """The process's budget manager; its background task reports spend and renews slices."""
    holder = instance_id()
    url = settings().budget_webhook_url
    manager = BudgetManager(
        _budget_store(),
        holder,
        on_threshold=threshold_webhook(url) if url else None,
        call_in=call_in.publisher(pool(), holder),
        call_in_wait_s=settings().budget_call_in_s,
    )
    # At SIGTERM the unreserved slices go back to the store at once, the reserved ones as their
    # requests settle; at exit, after the writer's drain, the leases are released (_release_budgets).
    loop = asyncio.get_running_loop()
    manager.tracks_writes = settings().write_usage
    if settings().write_usage:
        # Spend is the ledger: a settled request stays pending in our leases until its row is
        # committed (the writer's thread tells the loop).
        writer().on_written = _tell_budgets(manager, loop)
    _budget_tasks.append(loop.create_task(_run_budgets(manager), name="billingproxy-budgets"))
    if manager.call_in is not None:  # other instances' call-ins reach us here
        follower = call_in.follow(manager, database_url())
        _budget_tasks.append(loop.create_task(follower, name="billingproxy-budget-call-in"))
    shutdown.on_signal("budget-hand-back", manager.hand_back)
    shutdown.on_exit("budget-release", _release_budgets, order=20)  # after the writer's drain
    return manager


def _tell_budgets(manager: BudgetManager, loop: asyncio.AbstractEventLoop) -> Callable[[list[str]], None]:
    """The writer's thread reports committed rows to the budgets in their loop; at exit, once the
    server's loop has closed, directly (nothing else runs then)."""

    def written(ids: list[str]) -> None:
        try:
            loop.call_soon_threadsafe(manager.written, ids)
        except RuntimeError:  # the loop is closed
            manager.written(ids)

    return written


async def _release_budgets() -> None:
    """At exit: end our leases now, so the slices are free at once and nothing written is left in
    doubt. The server's loop (and its pool) is gone: a store of its own on this loop."""
    reports = budgets().closing_reports()
    if not reports:
        return
    if settings().budget_store == "redis":
        import redis.asyncio as aioredis

        from billingproxy.budgets.redis_store import RedisBudgetStore

        client = aioredis.from_url(settings().redis_url, socket_timeout=2, socket_connect_timeout=2)
        async with client:
            release = RedisBudgetStore(client, pool()).release(instance_id(), reports)
            await asyncio.wait_for(release, shutdown.drain_timeout(2.0))
        return
    async with db.async_pool(database_url(), application_name="billingproxy-exit", max_size=1) as exit_pool:
        await asyncio.wait_for(
            PostgresBudgetStore(exit_pool).release(instance_id(), reports), shutdown.drain_timeout(2.0)
        )


def _budget_store() -> BudgetStore:
    """PostgreSQL by default; Redis (atomic scripts) when BILLINGPROXY_BUDGET_STORE=redis."""
    if settings().budget_store == "redis":
        import redis.asyncio as aioredis

        from billingproxy.budgets.redis_store import RedisBudgetStore

        client = aioredis.from_url(settings().redis_url, socket_timeout=2, socket_connect_timeout=2)
        return RedisBudgetStore(client, pool())
    return PostgresBudgetStore(pool())


async def _run_budgets(manager: BudgetManager) -> None:
    await opened_pool()
    await manager.run()
