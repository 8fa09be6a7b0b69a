"""Calling slices in: a refused request asks every instance to hand back its unreserved slice.

The message goes over PostgreSQL ``NOTIFY billingproxy_budget`` (both budget stores keep their
connection pool to PostgreSQL), payload ``{"holder", "scope", "start"}``; every instance LISTENs
on one connection of its own and hands its slice of that scope over (``BudgetManager.hand_over``).
A message lost while an instance was not listening costs only time: its idle slice still goes
back after ``idle_s``, and a dead instance's after the lease TTL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from billingproxy.budgets.manager import BudgetManager
from billingproxy.db.listen import follow_channel

__all__ = ["CHANNEL", "follow", "publisher"]

CHANNEL = "billingproxy_budget"
log = logging.getLogger("billingproxy.budget")


def publisher(pool: AsyncConnectionPool, holder: str) -> Callable[[str, datetime], Awaitable[None]]:
    """The manager's ``call_in``: one NOTIFY through the pool (delivered to every listener, us included)."""

    async def call_in(scope: str, start: datetime) -> None:
        payload = json.dumps({"holder": holder, "scope": scope, "start": start.isoformat()})
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except (psycopg.OperationalError, PoolTimeout) as exc:  # the refusal stands
            log.warning("budget call-in not sent (%s)", type(exc).__name__)

    return call_in


async def follow(manager: BudgetManager, url: str, check_s: float = 15.0) -> None:
    """Run forever: hand our slice over on every call-in from another holder."""

    def called_in(note: psycopg.Notify) -> None:
        try:
            message = json.loads(note.payload)
            manager.hand_over(message["holder"], message["scope"], datetime.fromisoformat(message["start"]))
        except (ValueError, KeyError, TypeError):
            log.warning("malformed budget call-in ignored")

    await follow_channel(
        url,
        CHANNEL,
        application_name="billingproxy-budget",
        on_connect=None,  # nothing cached: a call-in missed while down costs only time
        on_notify=called_in,
        wait_s=check_s,
        retry_s=1.0,
        log=log,
        down="budget call-in channel down: idle slices come back after the idle time instead",
    )
