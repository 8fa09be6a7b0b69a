"""Budgets that hold under concurrency and across instances: the leased-slice manager, its
PostgreSQL and Redis stores, spend per period, and threshold alerts."""

from billingproxy.budgets import call_in
from billingproxy.budgets.alerts import threshold_webhook
from billingproxy.budgets.manager import (
    THRESHOLDS,
    BudgetExceeded,
    BudgetManager,
    BudgetStore,
    BudgetStoreUnavailable,
    Grant,
    Report,
    Reservation,
    crossed_thresholds,
)
from billingproxy.budgets.postgres_store import LEASE_TTL, PostgresBudgetStore
from billingproxy.budgets.spend import period_status

__all__ = [
    "LEASE_TTL",
    "THRESHOLDS",
    "BudgetExceeded",
    "BudgetManager",
    "BudgetStore",
    "BudgetStoreUnavailable",
    "Grant",
    "PostgresBudgetStore",
    "Report",
    "Reservation",
    "call_in",
    "crossed_thresholds",
    "period_status",
    "threshold_webhook",
]
