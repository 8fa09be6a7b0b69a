"""Budget scopes: what one budget counts. A tenant's is its id (``tn_…``, as before issue 19), a
key's ``key:<tenant>:<key id>``, an end user's ``end_user:<tenant>:<end user>``. The stores keep
spend and leases per scope; only the spend derived from the rollups needs to know the level."""

from __future__ import annotations

__all__ = ["LEVELS", "end_user_scope", "key_scope", "parse_scope", "tenant_scope"]

LEVELS = ("tenant", "key", "end_user")


def tenant_scope(tenant_id: str) -> str:
    return tenant_id


def key_scope(tenant_id: str, key_id: str) -> str:
    return f"key:{tenant_id}:{key_id}"


def end_user_scope(tenant_id: str, end_user: str) -> str:
    return f"end_user:{tenant_id}:{end_user}"


def parse_scope(scope: str) -> tuple[str, str, str | None]:
    """(level, tenant id, key id or end user or None). Tenant ids never contain ':' (tn_…), end users may."""
    if scope.startswith("key:") or scope.startswith("end_user:"):
        level, tenant_id, value = scope.split(":", 2)
        return level, tenant_id, value
    return "tenant", scope, None
