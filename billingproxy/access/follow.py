"""Changes to tenants, keys and end-user budgets reach every proxy instance within a second.

Migration 0017's triggers ``NOTIFY billingproxy_auth, '<tenant id>'`` on every change; each
instance LISTENs on one connection of its own and marks that tenant's cached keys for a refetch
(the next request of each costs one query, the others none). While the channel is down, the
cache TTL (BILLINGPROXY_AUTH_CACHE_TTL) bounds how stale an answer can be; on every (re)connect
everything cached is marked, since notifications sent while we were not listening are lost.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from billingproxy.access.auth import Authenticator

__all__ = ["CHANNEL", "follow"]

CHANNEL = "billingproxy_auth"
log = logging.getLogger("billingproxy.auth")


async def follow(authenticator: Authenticator, url: str, check_s: float = 15.0) -> None:
    """Run forever: invalidate on every notification; check the connection every ``check_s``
    seconds without one (a silently dead connection would otherwise hear nothing, forever)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, application_name="billingproxy-auth"
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                authenticator.invalidate()  # after LISTEN: no change can fall between the two
                while True:
                    async for note in conn.notifies(timeout=check_s):
                        authenticator.invalidate(note.payload or None)
                    await conn.execute("SELECT 1")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the TTL covers the gap; reconnect
            log.warning("auth change channel down (%s): the cache TTL applies until it is back", type(exc).__name__)
            await asyncio.sleep(1.0)
