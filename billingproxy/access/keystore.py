"""Async key and tenant lookups for the proxy's auth path (one small connection pool)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from billingproxy.access.auth import KeyRecord
from billingproxy.errors import Unavailable

__all__ = ["KeyStore"]

# The tenant's end-user overrides ride along (one round trip per cache miss, none per request).
_TENANT_FIELDS = sql.SQL("""t.id AS tenant_id, t.name AS tenant_name, t.status AS tenant_status,
    t.allowed_models, t.rpm_limit, t.tpm_limit, t.budget_usd, t.budget_period,
    t.stripe_customer_id AS customer_id, t.end_user_budget_usd, t.end_user_budget_period,
    (SELECT json_agg(json_build_array(e.end_user, e.budget_usd::text, e.budget_period))
       FROM end_user_budgets e WHERE e.tenant_id = t.id) AS end_user_overrides""")

KEY_QUERY = sql.SQL("""SELECT k.id AS key_id, k.key_hash, k.expires_at, k.revoked_at,
    k.budget_usd AS key_budget_usd, k.budget_period AS key_budget_period,
    k.rpm_limit AS key_rpm_limit, k.tpm_limit AS key_tpm_limit, k.model_limits AS key_model_limits, {tenant}
    FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = %s""").format(tenant=_TENANT_FIELDS)

# The static gateway token (PROXY_GATEWAY_TOKEN) maps to a tenant, not to a key row.
TENANT_QUERY = sql.SQL("""SELECT NULL AS key_id, 'gateway:' || t.id AS key_hash, {tenant}
    FROM tenants t WHERE t.id = %s OR lower(t.name) = lower(%s) ORDER BY t.id = %s DESC LIMIT 1""").format(
    tenant=_TENANT_FIELDS
)


def _record(row: dict | None) -> KeyRecord | None:
    if row is None:
        return None
    overrides = tuple(
        (name, None if budget is None else Decimal(budget), period)
        for name, budget, period in row["end_user_overrides"] or ()
    )
    models = tuple(
        (model, limits.get("rpm"), limits.get("tpm"))
        for model, limits in sorted((row.get("key_model_limits") or {}).items())
    )
    return KeyRecord(
        **{
            **row,
            "allowed_models": tuple(row["allowed_models"] or ()),
            "end_user_overrides": overrides,
            "key_model_limits": models,
        }
    )


class KeyStore:
    def __init__(self, pool: AsyncConnectionPool, timeout_s: float = 2.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def _one(self, query: sql.Composed, params: tuple) -> KeyRecord | None:
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:  # the pool returns dict rows
                cursor = await conn.execute(query, params)
                return _record(await cursor.fetchone())
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc

    async def lookup_key(self, key_hash: str) -> KeyRecord | None:
        return await self._one(KEY_QUERY, (key_hash,))

    async def lookup_tenant(self, ref: str) -> KeyRecord | None:
        return await self._one(TENANT_QUERY, (ref, ref, ref))
