"""Tenants and their API keys in PostgreSQL: the operations behind the CLI, the admin API and the
console. The only module that writes the ``tenants`` and ``api_keys`` tables."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from billingproxy.errors import InvalidInput, NotFound
from billingproxy.tenants.model import (
    STATUSES,
    ApiKey,
    EndUserBudget,
    Tenant,
    check_customer,
    check_end_user,
    check_grace,
    check_key_name,
    check_name,
    check_period,
    parse_budget,
    parse_model_limits,
    parse_models,
    parse_multiplier,
    positive_or_none,
)
from billingproxy.tokens import display_prefix, generate_token, hash_token, new_id

__all__ = ["UNSET", "TenantStore", "set_status_for_customer"]


_TENANT_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, [f.name for f in fields(Tenant)]))
_KEY_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, [f.name for f in fields(ApiKey)]))


UNSET: Any = object()  # "leave this field as it is" in update_tenant


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
            check_name(name),
            check_customer(stripe_customer_id),
            parse_models(models),
            positive_or_none("rpm", rpm_limit),
            positive_or_none("tpm", tpm_limit),
            parse_budget(budget_usd),
            check_period(budget_period),
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
            _q("""SELECT {tenant_columns} FROM tenants WHERE id = %s OR lower(name) = lower(%s)
                  ORDER BY id = %s DESC LIMIT 1"""),
            (ref, ref, ref),
        ).fetchone()
        if row is None:
            raise NotFound(f"no tenant with id or name {ref!r}")
        return Tenant(**row)

    _UNSET: Any = UNSET  # kept as a class attribute: callers write TenantStore._UNSET

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
        end_user_budget_usd: Any = _UNSET,
        end_user_budget_period: str | None = None,
    ) -> Tenant:
        """Change only the given fields. Pass None for budget/limits/customer to clear them."""
        tenant = self.get_tenant(ref)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_name(name)
        if models is not None:
            changes["allowed_models"] = parse_models(models)
        if budget_usd is not self._UNSET:
            changes["budget_usd"] = parse_budget(budget_usd)
        if budget_period is not None:
            changes["budget_period"] = check_period(budget_period)
        if rpm_limit is not self._UNSET:
            changes["rpm_limit"] = positive_or_none("rpm", rpm_limit)
        if tpm_limit is not self._UNSET:
            changes["tpm_limit"] = positive_or_none("tpm", tpm_limit)
        if stripe_customer_id is not self._UNSET:
            changes["stripe_customer_id"] = check_customer(stripe_customer_id)
        if end_user_budget_usd is not self._UNSET:
            changes["end_user_budget_usd"] = parse_budget(end_user_budget_usd)
        if end_user_budget_period is not None:
            changes["end_user_budget_period"] = check_period(end_user_budget_period)
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
        budget_usd: str | float | Decimal | None = None,
        budget_period: str = "monthly",
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        model_rpm: list[str] = (),  # type: ignore[assignment]
        model_tpm: list[str] = (),  # type: ignore[assignment]
    ) -> tuple[ApiKey, str]:
        """A new key for the tenant; returns the key and the token, which is never stored.
        ``model_rpm``/``model_tpm``: ``MODEL=N`` limits for this key on one model."""
        models = parse_model_limits(parse_model_limits({}, "rpm", list(model_rpm)), "tpm", list(model_tpm))
        limits = (*_key_limits(budget_usd, budget_period, rpm_limit, tpm_limit), Jsonb(models))
        with self.conn.transaction():
            key, token = self._insert_key(self.get_tenant(tenant_ref).id, name, expires_at, token, limits)
        self.conn.commit()
        return key, token

    def update_key(
        self,
        key_id: str,
        *,
        budget_usd: Any = _UNSET,
        budget_period: str | None = None,
        rpm_limit: Any = _UNSET,
        tpm_limit: Any = _UNSET,
        model_rpm: list[str] = (),  # type: ignore[assignment]
        model_tpm: list[str] = (),  # type: ignore[assignment]
    ) -> ApiKey:
        """Change a key's own budget and limits (None clears one); omitted ones stay.
        ``model_rpm``/``model_tpm`` entries ``MODEL=N`` set one model's limit, ``MODEL=none`` drop it."""
        key = self.get_key(key_id)
        changes: dict[str, Any] = {}
        if model_rpm or model_tpm:
            models = parse_model_limits(key.model_limits, "rpm", list(model_rpm))
            changes["model_limits"] = Jsonb(parse_model_limits(models, "tpm", list(model_tpm)))
        if budget_usd is not self._UNSET:
            changes["budget_usd"] = parse_budget(budget_usd)
        if budget_period is not None:
            changes["budget_period"] = check_period(budget_period)
        if rpm_limit is not self._UNSET:
            changes["rpm_limit"] = positive_or_none("rpm", rpm_limit)
        if tpm_limit is not self._UNSET:
            changes["tpm_limit"] = positive_or_none("tpm", tpm_limit)
        if not changes:
            return key
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes)
        statement = sql.SQL("UPDATE api_keys SET {} WHERE id = %s RETURNING {}").format(assignments, _KEY_COLUMNS)
        row = self.conn.execute(statement, (*changes.values(), key.id)).fetchone()
        self.conn.commit()
        return ApiKey(**row)

    # end users

    def set_end_user_budget(
        self, tenant_ref: str, end_user: str, *, budget_usd: Any, budget_period: str | None = None
    ) -> EndUserBudget:
        """An end user's own budget, overriding the tenant's default (None: no budget for them)."""
        tenant = self.get_tenant(tenant_ref)
        values = (
            tenant.id,
            check_end_user(end_user),
            parse_budget(budget_usd),
            None if budget_period is None else check_period(budget_period),
        )
        row = self.conn.execute(
            """INSERT INTO end_user_budgets (tenant_id, end_user, budget_usd, budget_period) VALUES (%s, %s, %s, %s)
               ON CONFLICT (tenant_id, end_user) DO UPDATE SET budget_usd = excluded.budget_usd,
                   budget_period = excluded.budget_period, updated_at = now()
               RETURNING tenant_id, end_user, budget_usd, budget_period, updated_at""",
            values,
        ).fetchone()
        self.conn.commit()
        return EndUserBudget(**row)

    def clear_end_user_budget(self, tenant_ref: str, end_user: str) -> bool:
        """Back to the tenant's default; True if there was an override."""
        tenant = self.get_tenant(tenant_ref)
        cursor = self.conn.execute(
            "DELETE FROM end_user_budgets WHERE tenant_id = %s AND end_user = %s", (tenant.id, end_user)
        )
        self.conn.commit()
        return cursor.rowcount > 0

    def list_end_user_budgets(self, tenant_ref: str) -> list[EndUserBudget]:
        tenant = self.get_tenant(tenant_ref)
        rows = self.conn.execute(
            """SELECT tenant_id, end_user, budget_usd, budget_period, updated_at FROM end_user_budgets
               WHERE tenant_id = %s ORDER BY end_user""",
            (tenant.id,),
        ).fetchall()
        return [EndUserBudget(**row) for row in rows]

    def _insert_key(
        self,
        tenant_id: str,
        name: str | None,
        expires_at: datetime | None,
        token: str | None = None,
        limits: tuple[Any, ...] = (None, "monthly", None, None, Jsonb({})),
    ) -> tuple[ApiKey, str]:
        token = token or generate_token()
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expiry must carry a time zone")
        row = self.conn.execute(
            _q("""INSERT INTO api_keys (id, tenant_id, key_hash, key_prefix, name, expires_at,
                                        budget_usd, budget_period, rpm_limit, tpm_limit, model_limits)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {key_columns}"""),
            (
                new_id("key"),
                tenant_id,
                hash_token(token),
                display_prefix(token),
                check_key_name(name),
                expires_at,
                *limits,
            ),
        ).fetchone()
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

    def find_key_by_token(self, token: str) -> ApiKey | None:
        row = self.conn.execute(
            _q("SELECT {key_columns} FROM api_keys WHERE key_hash = %s"), (hash_token(token),)
        ).fetchone()
        return ApiKey(**row) if row else None

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
        """A new key for the same tenant, with the old key's lifetime (a 90-day key's successor is a
        90-day key); the old one stays valid for ``grace`` then expires. One transaction: a failed
        rotation leaves no new key behind."""
        grace = check_grace(grace)
        with self.conn.transaction():
            row = self.conn.execute(_q("SELECT {key_columns} FROM api_keys WHERE id = %s FOR UPDATE"), (key_id,))
            found = row.fetchone()
            if found is None:
                raise NotFound(f"no key with id {key_id!r}")
            old = ApiKey(**found)
            if old.state() != "active":
                raise InvalidInput(f"key {key_id} is {old.state()}; only an active key can be rotated")
            lifetime = old.expires_at - old.created_at if old.expires_at and old.created_at else None
            expires_at = datetime.now(UTC) + lifetime if lifetime else None
            # The successor keeps the old key's budget and limits (its spend starts afresh).
            limits = (old.budget_usd, old.budget_period, old.rpm_limit, old.tpm_limit, Jsonb(old.model_limits))
            new_key, token = self._insert_key(old.tenant_id, old.name, expires_at, None, limits)
            row = self.conn.execute(
                _q("""UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), now() + %s)
                    WHERE id = %s RETURNING {key_columns}"""),
                (grace, key_id),
            ).fetchone()
        self.conn.commit()
        return new_key, token, ApiKey(**row)


def _key_limits(
    budget_usd: Any, budget_period: str, rpm_limit: int | None, tpm_limit: int | None
) -> tuple[Decimal | None, str, int | None, int | None]:
    return (
        parse_budget(budget_usd),
        check_period(budget_period),
        positive_or_none("rpm", rpm_limit),
        positive_or_none("tpm", tpm_limit),
    )


def set_status_for_customer(conn: psycopg.Connection, customer_id: str, status: str) -> list[str]:
    """Set the status of the tenants billed to a Stripe customer, inside the caller's transaction
    (the Stripe webhook commits it with its dedupe row). Returns the ids of tenants that changed."""
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    with conn.cursor() as cursor:
        rows = cursor.execute(
            """UPDATE tenants SET status = %s, updated_at = now()
               WHERE stripe_customer_id = %s AND status <> %s RETURNING id""",
            (status, customer_id, status),
        ).fetchall()
    return [row[0] if isinstance(row, tuple) else row["id"] for row in rows]
