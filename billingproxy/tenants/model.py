"""Tenants and API keys as values, and the validation of operator input (CLI and admin API)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from billingproxy.errors import InvalidInput
from billingproxy.tenants.periods import BUDGET_PERIODS

__all__ = [
    "STATUSES",
    "ApiKey",
    "Tenant",
    "check_customer",
    "check_name",
    "check_period",
    "key_state",
    "parse_budget",
    "parse_models",
    "parse_multiplier",
    "positive_or_none",
]

STATUSES = ("active", "suspended")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
_STRIPE_CUSTOMER = re.compile(r"^cus_[A-Za-z0-9]+$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@\-]{0,199}$")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    status: str
    stripe_customer_id: str | None
    allowed_models: list[str]
    rpm_limit: int | None
    tpm_limit: int | None
    budget_usd: Decimal | None
    budget_period: str
    price_multiplier: Decimal = Decimal(1)  # markup applied to the billed amount (resellers)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    key_prefix: str
    name: str | None
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        return key_state(self.revoked_at, self.expires_at, now)

    def to_json(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "state": self.state()})


def key_state(revoked_at: datetime | None, expires_at: datetime | None, now: datetime | None = None) -> str:
    """Whether a key is usable: "revoked", "expired" or "active" (the one rule; auth uses it too)."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        out[key] = value
    return out


# ---- input validation (shared by CLI and admin API) --------------------------------------


def parse_budget(value: str | float | Decimal | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        budget = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"budget must be a number of US dollars, got {value!r}") from exc
    if not budget.is_finite() or budget < 0:
        raise InvalidInput(f"budget must be a non-negative amount, got {value!r}")
    return budget


def parse_multiplier(value: str | float | Decimal) -> Decimal:
    try:
        multiplier = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"price multiplier must be a number, got {value!r}") from exc
    if not multiplier.is_finite() or not Decimal("0.000001") <= multiplier <= Decimal(1000):
        raise InvalidInput("price multiplier must be between 0.000001 and 1000")
    return multiplier


def parse_models(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    models = [m.strip() for m in value.split(",")] if isinstance(value, str) else [str(m).strip() for m in value]
    models = [m for m in models if m]
    for model in models:
        if not _MODEL.match(model):
            raise InvalidInput(f"invalid model name {model!r}")
    return sorted(set(models))


def positive_or_none(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput("tenant name must be 1-100 letters, digits, spaces, '.', '_' or '-'")
    return name


def check_customer(customer: str | None) -> str | None:
    if customer in (None, ""):
        return None
    if not _STRIPE_CUSTOMER.match(customer):
        raise InvalidInput(f"Stripe customer ids look like cus_…, got {customer!r}")
    return customer


def check_period(period: str) -> str:
    if period not in BUDGET_PERIODS:
        raise InvalidInput(f"budget period must be one of {', '.join(BUDGET_PERIODS)}, got {period!r}")
    return period
