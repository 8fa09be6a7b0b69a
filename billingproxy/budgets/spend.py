"""What a tenant has spent, reserved and has left this period (read-only; CLI, admin API, console)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from billingproxy.budgets.scopes import parse_scope
from billingproxy.metering import ZERO

__all__ = ["DERIVED_SPEND_SQL", "IN_DOUBT", "derived_spend_query", "lease_sums_query", "period_status"]

# A dead holder's unwritten spend and requests in flight count this long after its lease expired,
# unless `usage audit` releases them sooner (billingproxy.budgets.doubt): the stale-reservation
# timeout, the longest a request may run, so a replay or audit within it keeps spend in the budget.
IN_DOUBT = timedelta(minutes=30)

# What the usage rows say was spent (the ledger; rollups kept with the rows).
DERIVED_SPEND_SQL = """SELECT coalesce(sum(cost_usd), 0) AS spent FROM usage_daily
    WHERE tenant_id = %s AND day >= (%s AT TIME ZONE 'UTC')::date"""
# The same for a key or an end user, from the attribution rollup (migration 0015): one range scan.
_DERIVED_ATTRIBUTED_SQL = """SELECT coalesce(sum(cost_usd), 0) AS spent FROM usage_daily_attribution
    WHERE tenant_id = %s AND dimension = %s AND value = %s AND day >= (%s AT TIME ZONE 'UTC')::date"""


# What the live holders of a scope-period hold (pending spend included), of that their pending
# spend, and what dead holders left in doubt: a lease that expired unreleased (its holder was
# killed) still counts as spent, whole (what of the slice was reserved since its last report is
# unknown), for IN_DOUBT after it expired or until `usage audit` released it (doubt.py).
_LEASE_SUMS_SQL = """SELECT coalesce(sum(amount) FILTER (WHERE expires_at > now()), 0) AS held,
           coalesce(sum(pending) FILTER (WHERE expires_at > now()), 0) AS pending,
           coalesce(sum(amount) FILTER (WHERE expires_at <= now()), 0) AS in_doubt
    FROM budget_leases
    WHERE tenant_id = %s AND period_start = %s AND holder <> %s AND expires_at > now() - %s"""


def lease_sums_query(scope: str, start: datetime, but: str = "") -> tuple[str, tuple]:
    """The query (and its parameters) for ``held``, ``pending`` and ``in_doubt`` of ``scope``'s
    leases since ``start``, leaving out holder ``but`` (a store asking for itself; "" is nobody)."""
    return _LEASE_SUMS_SQL, (scope, start, but, IN_DOUBT)


def derived_spend_query(scope: str, start: datetime) -> tuple[str, tuple]:
    """The query (and its parameters) for what the rollups say ``scope`` spent since ``start``."""
    level, tenant_id, value = parse_scope(scope)
    if level == "tenant":
        return DERIVED_SPEND_SQL, (tenant_id, start)
    return _DERIVED_ATTRIBUTED_SQL, (tenant_id, level, value, start)


def period_status(conn: psycopg.Connection, tenant_id: str, start: datetime, budget: Decimal | None) -> dict:
    """Spend, reserved (slices held by live instances) and remaining, for the CLI and admin API.
    ``tenant_id`` may be any budget scope (billingproxy.budgets.scopes). Spend is the usage
    ledger's plus what live instances settled and have not written yet (their pending), plus what
    killed instances left in doubt (``in_doubt_usd``, part of it; billingproxy.budgets.doubt).

    ``conn`` must return dict rows (billingproxy.db.connect does).
    """
    ledger = conn.execute(*derived_spend_query(tenant_id, start)).fetchone()["spent"]
    held = conn.execute(*lease_sums_query(tenant_id, start)).fetchone()
    spent = ledger + held["pending"] + held["in_doubt"]
    reserved = held["held"] - held["pending"]
    remaining = None if budget is None else max(budget - spent - reserved, ZERO)
    return {
        "period_start": start,
        "spent_usd": spent,
        "reserved_usd": reserved,
        "remaining_usd": remaining,
        "in_doubt_usd": held["in_doubt"],
    }
