"""Tenants and their API keys in PostgreSQL: the operations behind the CLI and the admin API."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from billingproxy.tokens import display_prefix, generate_token, hash_token, new_id

BUDGET_PERIODS = ("monthly", "daily", "total")
STATUSES = ("active", "suspended")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
_STRIPE_CUSTOMER = re.compile(r"^cus_[A-Za-z0-9]+$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@\-]{0,199}$")


class InvalidInput(ValueError):
    """Bad operator input; the message says what to fix."""


class NotFound(LookupError):
    pass


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
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "state": self.state()})


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


def _positive_or_none(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput("tenant name must be 1-100 letters, digits, spaces, '.', '_' or '-'")
    return name


def _check_customer(customer: str | None) -> str | None:
    if customer in (None, ""):
        return None
    if not _STRIPE_CUSTOMER.match(customer):
        raise InvalidInput(f"Stripe customer ids look like cus_…, got {customer!r}")
    return customer


def _check_period(period: str) -> str:
    if period not in BUDGET_PERIODS:
        raise InvalidInput(f"budget period must be one of {', '.join(BUDGET_PERIODS)}, got {period!r}")
    return period


# ---- the store ---------------------------------------------------------------------------

_TENANT_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, [f.name for f in fields(Tenant)]))
_KEY_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, [f.name for f in fields(ApiKey)]))


def _q(text: str) -> sql.Composed:
    """A statement with {tenant_columns} / {key_columns} filled in as quoted identifiers."""
    return sql.SQL(text).format(tenant_columns=_TENANT_COLUMNS, key_columns=_KEY_COLUMNS)


class TenantStore:
    """Synchronous operations on tenants and keys over one psycopg connection (dict rows)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # tenants

    def create_tenant(
        self,
        name: str,
        *,
        models: str | list[str] | None = None,
        budget_usd: str | float | Decimal | None = None,
        budget_period: str = "monthly",
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        stripe_customer_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Tenant:
        values = (
            new_id("tn"),
            _check_name(name),
            _check_customer(stripe_customer_id),
            parse_models(models),
            _positive_or_none("rpm", rpm_limit),
            _positive_or_none("tpm", tpm_limit),
            parse_budget(budget_usd),
            _check_period(budget_period),
            Jsonb(metadata or {}),
        )
        try:
            row = self.conn.execute(
                _q("""INSERT INTO tenants (id, name, stripe_customer_id, allowed_models, rpm_limit,
                                         tpm_limit, budget_usd, budget_period, metadata)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {tenant_columns}"""),
                values,
            ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            self.conn.rollback()
            raise InvalidInput(f"a tenant named {name!r} or with that Stripe customer already exists") from exc
        self.conn.commit()
        return Tenant(**row)

    def list_tenants(self) -> list[Tenant]:
        rows = self.conn.execute(_q("SELECT {tenant_columns} FROM tenants ORDER BY created_at, id")).fetchall()
        return [Tenant(**row) for row in rows]

    def get_tenant(self, ref: str) -> Tenant:
        """By id or by name."""
        row = self.conn.execute(
            _q("SELECT {tenant_columns} FROM tenants WHERE id = %s OR name = %s ORDER BY id = %s DESC LIMIT 1"),
            (ref, ref, ref),
        ).fetchone()
        if row is None:
            raise NotFound(f"no tenant with id or name {ref!r}")
        return Tenant(**row)

    def get_tenant_by_customer(self, customer_id: str) -> Tenant | None:
        row = self.conn.execute(
            _q("SELECT {tenant_columns} FROM tenants WHERE stripe_customer_id = %s"), (customer_id,)
        ).fetchone()
        return Tenant(**row) if row else None

    _UNSET: Any = object()

    def update_tenant(
        self,
        ref: str,
        *,
        name: str | None = None,
        models: str | list[str] | None = None,
        budget_usd: Any = _UNSET,
        budget_period: str | None = None,
        rpm_limit: Any = _UNSET,
        tpm_limit: Any = _UNSET,
        stripe_customer_id: Any = _UNSET,
        status: str | None = None,
        price_multiplier: str | float | Decimal | None = None,
    ) -> Tenant:
        """Change only the given fields. Pass None for budget/limits/customer to clear them."""
        tenant = self.get_tenant(ref)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _check_name(name)
        if models is not None:
            changes["allowed_models"] = parse_models(models)
        if budget_usd is not self._UNSET:
            changes["budget_usd"] = parse_budget(budget_usd)
        if budget_period is not None:
            changes["budget_period"] = _check_period(budget_period)
        if rpm_limit is not self._UNSET:
            changes["rpm_limit"] = _positive_or_none("rpm", rpm_limit)
        if tpm_limit is not self._UNSET:
            changes["tpm_limit"] = _positive_or_none("tpm", tpm_limit)
        if stripe_customer_id is not self._UNSET:
            changes["stripe_customer_id"] = _check_customer(stripe_customer_id)
        if price_multiplier is not None:
            changes["price_multiplier"] = parse_multiplier(price_multiplier)
        if status is not None:
            if status not in STATUSES:
                raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
            changes["status"] = status
        if not changes:
            return tenant
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes)
        statement = sql.SQL("UPDATE tenants SET {}, updated_at = now() WHERE id = %s RETURNING {}").format(
            assignments, _TENANT_COLUMNS
        )
        try:
            row = self.conn.execute(statement, (*changes.values(), tenant.id)).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            self.conn.rollback()
            raise InvalidInput("another tenant already has that name or Stripe customer") from exc
        self.conn.commit()
        return Tenant(**row)

    def set_status(self, ref: str, status: str) -> Tenant:
        return self.update_tenant(ref, status=status)

    # keys

    def create_key(
        self,
        tenant_ref: str,
        *,
        name: str | None = None,
        expires_at: datetime | None = None,
        token: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for the tenant; returns the key and the token, which is never stored."""
        tenant = self.get_tenant(tenant_ref)
        token = token or generate_token()
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expiry must carry a time zone")
        row = self.conn.execute(
            _q("""INSERT INTO api_keys (id, tenant_id, key_hash, key_prefix, name, expires_at)
                VALUES (%s, %s, %s, %s, %s, %s) RETURNING {key_columns}"""),
            (new_id("key"), tenant.id, hash_token(token), display_prefix(token), name, expires_at),
        ).fetchone()
        self.conn.commit()
        return ApiKey(**row), token

    def list_keys(self, tenant_ref: str | None = None) -> list[ApiKey]:
        if tenant_ref is None:
            rows = self.conn.execute(_q("SELECT {key_columns} FROM api_keys ORDER BY created_at, id")).fetchall()
        else:
            tenant = self.get_tenant(tenant_ref)
            rows = self.conn.execute(
                _q("SELECT {key_columns} FROM api_keys WHERE tenant_id = %s ORDER BY created_at, id"), (tenant.id,)
            ).fetchall()
        return [ApiKey(**row) for row in rows]

    def get_key(self, key_id: str) -> ApiKey:
        row = self.conn.execute(_q("SELECT {key_columns} FROM api_keys WHERE id = %s"), (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return ApiKey(**row)

    def revoke_key(self, key_id: str) -> ApiKey:
        row = self.conn.execute(
            _q("""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
                WHERE id = %s RETURNING {key_columns}"""),
            (key_id,),
        ).fetchone()
        if row is None:
            self.conn.rollback()
            raise NotFound(f"no key with id {key_id!r}")
        self.conn.commit()
        return ApiKey(**row)

    def rotate_key(self, key_id: str, *, grace: timedelta = timedelta(hours=24)) -> tuple[ApiKey, str, ApiKey]:
        """A new key for the same tenant; the old one stays valid for ``grace`` then expires."""
        if grace < timedelta(0):
            raise InvalidInput("grace period must not be negative")
        old = self.get_key(key_id)
        if old.state() != "active":
            raise InvalidInput(f"key {key_id} is {old.state()}; only an active key can be rotated")
        new_key, token = self.create_key(old.tenant_id, name=old.name)
        row = self.conn.execute(
            _q("""UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), now() + %s)
                WHERE id = %s RETURNING {key_columns}"""),
            (grace, key_id),
        ).fetchone()
        self.conn.commit()
        return new_key, token, ApiKey(**row)
