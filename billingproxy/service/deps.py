"""What the routers share: the service's state (pool, settings, Stripe API) and the admin check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from psycopg_pool import ConnectionPool

from billingproxy.billing import StripeApi
from billingproxy.config import BillingSettings
from billingproxy.tenants import TenantStore
from billingproxy.tokens import constant_time_equals

__all__ = ["AdminOnly", "ServiceState", "Store", "state"]


@dataclass
class ServiceState:
    pool: ConnectionPool
    admin_key: str | None
    billing: BillingSettings
    stripe_api: StripeApi | None


def state(request: Request) -> ServiceState:
    return request.app.state.billingproxy


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    expected = state(request).admin_key
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not expected or not token or not constant_time_equals(token, expected):
        raise HTTPException(401, "the admin API needs 'Authorization: Bearer <master key>'")


def tenant_store(request: Request) -> Iterator[TenantStore]:
    with state(request).pool.connection() as conn:
        yield TenantStore(conn)


Store = Annotated[TenantStore, Depends(tenant_store)]
AdminOnly = [Depends(require_admin)]
