"""Tenants and API keys as values, and the validation of operator input (CLI and admin API)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from billingproxy.errors import InvalidInput
from billingproxy.tenants.periods import BUDGET_PERIODS

__all__ = [
    "STATUSES",
    "ApiKey",
    "EndUserBudget",
    "Tenant",
    "check_customer",
    "check_end_user",
    "check_grace",
    "check_key_name",
    "check_name",
    "check_period",
    "expiry_in_days",
    "grace_hours",
    "key_state",
    "parse_budget",
    "parse_model_limits",
    "parse_models",
    "parse_multiplier",
    "positive_or_none",
]

STATUSES = ("active", "suspended")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
_ID_SHAPED = re.compile(r"^tn_", re.IGNORECASE)
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
    end_user_budget_usd: Decimal | None = None  # every end user's budget unless overridden
    end_user_budget_period: str = "daily"

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class EndUserBudget:
    """A per-end-user override of the tenant's end-user budget (None: no budget for this one)."""

    tenant_id: str
    end_user: str
    budget_usd: Decimal | None
    budget_period: str | None  # None: the tenant's end-user period
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
    budget_usd: Decimal | None = None  # the key's own budget, on top of its tenant's
    budget_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    model_limits: dict[str, dict[str, int]] = field(default_factory=dict)  # {"gpt-4o": {"rpm": 10, "tpm": 5000}}

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


# The columns' ranges (db/migrations): budgets NUMERIC(20, 6), multipliers NUMERIC(12, 6), limits int4.
MAX_BUDGET_USD = Decimal("1e14")  # exclusive: 14 integer digits
MONEY_PLACES = 6
MAX_LIMIT = 2**31 - 1
MAX_KEY_LIFETIME = timedelta(days=36_500)  # keys that outlive a century are a typo
MAX_GRACE = timedelta(days=365)


def _decimal(value: str | float | Decimal, what: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    if number != number.quantize(Decimal(1).scaleb(-MONEY_PLACES), rounding=ROUND_DOWN):
        # Stored with 6 decimal places: refusing beats silently rounding 0.0000001 to 0.
        raise InvalidInput(f"{what} has more than {MONEY_PLACES} decimal places: {value!r}")
    return number


def parse_budget(value: str | float | Decimal | None) -> Decimal | None:
    if value is None or value == "":
        return None
    budget = _decimal(value, "budget")
    if budget < 0:
        raise InvalidInput(f"budget must be a non-negative amount, got {value!r}")
    if budget >= MAX_BUDGET_USD:
        raise InvalidInput(f"budget must be below {MAX_BUDGET_USD:,.0f} USD, got {value!r}")
    return budget


def parse_multiplier(value: str | float | Decimal) -> Decimal:
    multiplier = _decimal(value, "price multiplier")
    if not Decimal("0.000001") <= multiplier <= Decimal(1000):
        raise InvalidInput("price multiplier must be between 0.000001 and 1000")
    return multiplier


def expiry_in_days(days: float | None, now: datetime | None = None) -> datetime | None:
    """When a key created now with this lifetime expires (None: never)."""
    if days is None:
        return None
    if not 0 < days <= MAX_KEY_LIFETIME.days:
        raise InvalidInput(f"a key's lifetime must be more than 0 and at most {MAX_KEY_LIFETIME.days} days, got {days}")
    return (now or datetime.now(UTC)) + timedelta(days=days)


def grace_hours(hours: float) -> timedelta:
    """A rotation's grace period, checked before it becomes a timedelta (which overflows)."""
    if not 0 <= hours <= MAX_GRACE.total_seconds() / 3600:
        raise InvalidInput(f"grace period must be between 0 and {MAX_GRACE.days * 24} hours, got {hours}")
    return timedelta(hours=hours)


def check_grace(grace: timedelta) -> timedelta:
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInput(f"grace period must be between 0 and {MAX_GRACE.days * 24} hours")
    return grace


def check_key_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or len(name) > 200 or not name.isprintable()):
        raise InvalidInput("key name must be at most 200 printable characters")
    return name


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
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_LIMIT:
        raise InvalidInput(f"{name} must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def check_name(name: str) -> str:
    """Names are unique case-insensitively (an index on lower(name)) and never look like an id,
    since a tenant is referred to by either."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput("tenant name must be 1-100 letters, digits, spaces, '.', '_' or '-'")
    if _ID_SHAPED.match(name):
        raise InvalidInput(f"tenant name {name!r} looks like a tenant id (tn_…); choose another name")
    return name


def check_customer(customer: str | None) -> str | None:
    if customer in (None, ""):
        return None
    if not _STRIPE_CUSTOMER.match(customer):
        raise InvalidInput(f"Stripe customer ids look like cus_…, got {customer!r}")
    return customer


_END_USER = re.compile(r"^[A-Za-z0-9_.:@+/=~|#-]{1,128}$")  # as attribution accepts it


def check_end_user(end_user: str) -> str:
    if not isinstance(end_user, str) or not _END_USER.match(end_user):
        raise InvalidInput("end user must be 1-128 characters: letters, digits and _.:@+/=~|#-")
    return end_user


def parse_model_limits(current: dict[str, dict[str, int]], kind: str, specs: list[str]) -> dict[str, dict[str, int]]:
    """``current`` with ``MODEL=N`` (or ``MODEL=none``) applied for ``kind`` ("rpm" or "tpm")."""
    limits = {model: dict(values) for model, values in current.items()}
    for spec in specs:
        model, sep, value = spec.partition("=")
        model = model.strip()
        if not sep or not _MODEL.match(model):
            raise InvalidInput(f"per-model {kind} must look like MODEL=N (or MODEL=none), got {spec!r}")
        entry = limits.setdefault(model, {})
        if value.strip().lower() == "none":
            entry.pop(kind, None)
        else:
            try:
                number = int(value)
            except ValueError:
                raise InvalidInput(f"per-model {kind} for {model} must be a whole number, got {value!r}") from None
            entry[kind] = positive_or_none(f"{kind} for {model}", number)  # type: ignore[assignment]
        if not entry:
            del limits[model]
    return limits


def check_period(period: str) -> str:
    if period not in BUDGET_PERIODS:
        raise InvalidInput(f"budget period must be one of {', '.join(BUDGET_PERIODS)}, got {period!r}")
    return period
