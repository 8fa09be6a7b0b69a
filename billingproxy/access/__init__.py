"""Who is calling: gateway tokens to tenants (cached), the routes a tenant may call, and the
metadata our auth hands LiteLLM and reads back."""

from billingproxy.access.auth import Authenticator, KeyRecord, Principal
from billingproxy.access.identity import (
    TenantLimits,
    auth_metadata,
    auth_metadata_of_payload,
    limiter_identity,
    limits_from_auth,
    tenant_limiter_identity,
)
from billingproxy.access.keystore import KeyStore
from billingproxy.access.routes import TENANT_ROUTES, check_tenant_route, tenant_may_call
from billingproxy.access.token_counting import TokenCountLimiter, check_token_count

__all__ = [
    "TENANT_ROUTES",
    "Authenticator",
    "KeyRecord",
    "KeyStore",
    "Principal",
    "TenantLimits",
    "TokenCountLimiter",
    "auth_metadata",
    "auth_metadata_of_payload",
    "check_tenant_route",
    "check_token_count",
    "limiter_identity",
    "limits_from_auth",
    "tenant_limiter_identity",
    "tenant_may_call",
]
