"""Tenants and their API keys: the values, the rules for operator input, the PostgreSQL store."""

from billingproxy.tenants.model import STATUSES, ApiKey, EndUserBudget, Tenant, expiry_in_days, grace_hours, key_state
from billingproxy.tenants.periods import BUDGET_PERIODS, DEFAULT_PERIOD, period_start
from billingproxy.tenants.store import UNSET, TenantStore, set_status_for_customer

__all__ = [
    "BUDGET_PERIODS",
    "DEFAULT_PERIOD",
    "STATUSES",
    "UNSET",
    "ApiKey",
    "EndUserBudget",
    "Tenant",
    "TenantStore",
    "expiry_in_days",
    "grace_hours",
    "key_state",
    "period_start",
    "set_status_for_customer",
]
