"""Budget doubt: what killed instances left unaccounted, and its release by ``usage audit``.

A lease that expires unreleased (its holder was SIGKILLed, OOM-killed, lost its host) leaves its
settled-but-unwritten spend and its requests in flight *in doubt*: both stores count them as spent
for ``IN_DOUBT`` after the lease expired (spend.py), because the provider may bill those
calls and their rows arrive only when the instance's stdout is replayed. Once ``usage audit`` has
put every request of such an instance on the ledger, its doubt is released at once.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from billingproxy.budgets import postgres_store

__all__ = ["release_dead_holders"]


def release_dead_holders(dsn: str, holders: list[str], until: datetime, redis_url: str | None = None) -> int:
    """Release the doubt of these holders' leases that expired by ``until`` (so every request the
    holder admitted was before ``until``); in Redis too when that store is used. Returns how many
    leases were released. A holder still alive is never touched (its lease has not expired)."""
    if not holders:
        return 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        released = postgres_store.release_holders(conn, holders, until)
    if redis_url:
        import redis

        from billingproxy.budgets import redis_store

        with redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5) as client:
            released += redis_store.release_holders(client, holders, until)
    return released
