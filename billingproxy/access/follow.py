"""Changes to tenants, keys and end-user budgets reach every proxy instance within a second.

Migration 0017's triggers ``NOTIFY billingproxy_auth, '<tenant id>'`` on every change; each
instance LISTENs on one connection of its own and marks that tenant's cached keys for a refetch
(the next request of each costs one query, the others none). While the channel is down, the
cache TTL (BILLINGPROXY_AUTH_CACHE_TTL) bounds how stale an answer can be; on every (re)connect
everything cached is marked, since notifications sent while we were not listening are lost.
"""

from __future__ import annotations

import logging

import psycopg

from billingproxy.access.auth import Authenticator
from billingproxy.db.listen import follow_channel

__all__ = ["CHANNEL", "follow"]

CHANNEL = "billingproxy_auth"
log = logging.getLogger("billingproxy.auth")


async def follow(authenticator: Authenticator, url: str, check_s: float = 15.0) -> None:
    """Run forever: invalidate on every notification; probe the connection every ``check_s``
    seconds without one."""

    async def everything(conn: psycopg.AsyncConnection) -> None:
        authenticator.invalidate()

    def tenant(note: psycopg.Notify) -> None:
        authenticator.invalidate(note.payload or None)

    await follow_channel(
        url,
        CHANNEL,
        application_name="billingproxy-auth",
        on_connect=everything,
        on_notify=tenant,
        wait_s=check_s,
        retry_s=1.0,
        log=log,
        down="auth change channel down: the cache TTL applies until it is back",
    )
