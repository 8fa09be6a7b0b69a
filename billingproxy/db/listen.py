"""A LISTEN connection that stays up: the price book, the auth cache and budget call-ins each follow a channel.

After LISTEN the follower's ``on_connect`` re-reads what it caches (a notification sent while
nobody listened is lost); then it waits for notifications, each handed to ``on_notify`` (which
must not use the connection: psycopg holds it while waiting), for at most ``wait_s`` seconds or
``stop_after`` notifications, and runs ``after_wait`` (a reload, or a probe: a silently dead
connection would hear nothing, forever), again and again. A failure is logged and the connection
re-made after ``retry_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

__all__ = ["follow_channel", "probe"]

Connection = psycopg.AsyncConnection


async def probe(conn: Connection) -> None:
    """The default ``after_wait``: a silently dead connection fails here instead of hearing nothing."""
    await conn.execute("SELECT 1")


async def follow_channel(
    url: str,
    channel: str,
    *,
    application_name: str,
    on_connect: Callable[[Connection], Awaitable[None]] | None,
    on_notify: Callable[[psycopg.Notify], None] | None,
    after_wait: Callable[[Connection], Awaitable[None]] = probe,
    wait_s: float,
    stop_after: int | None = None,
    retry_s: float,
    log: logging.Logger,
    down: str,
) -> None:
    """Run forever (until cancelled). ``down`` is the warning logged, with the error's type, when
    the connection fails."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, application_name=application_name
            ) as conn:
                await conn.execute(f"LISTEN {channel}")
                if on_connect is not None:
                    await on_connect(conn)  # after LISTEN: no change can fall between the two
                while True:
                    async for note in conn.notifies(timeout=wait_s, stop_after=stop_after):
                        if on_notify is not None:
                            on_notify(note)
                    await after_wait(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - what the follower caches stays; reconnect
            log.warning("%s (%s)", down, type(exc).__name__)
            await asyncio.sleep(retry_s)
