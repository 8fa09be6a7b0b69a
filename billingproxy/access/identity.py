"""The LiteLLM metadata contract: what our auth attaches to a request and how it is read back.

Custom auth returns a ``UserAPIKeyAuth`` whose ``metadata`` is ``auth_metadata(record)``; LiteLLM
hands that dict back to the pre-call hook (``user_api_key_dict.metadata``) and copies it into the
standard logging payload under ``metadata.user_api_key_auth_metadata``. These keys are the whole
contract; nothing else in billingproxy spells them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billingproxy.access.auth import KeyRecord
from billingproxy.tenants import DEFAULT_PERIOD

__all__ = [
    "PAYLOAD_AUTH_METADATA",
    "TenantLimits",
    "auth_metadata",
    "auth_metadata_of_payload",
    "limiter_identity",
    "limits_from_auth",
]

PAYLOAD_AUTH_METADATA = "user_api_key_auth_metadata"  # the logging payload's copy of our metadata


def auth_metadata(record: KeyRecord) -> dict[str, Any]:
    """The metadata our auth attaches to every request of this key (JSON-safe values)."""
    return {
        "tenant_id": record.tenant_id,
        "api_key_id": record.key_id,
        "customer_id": record.customer_id,
        "budget_usd": None if record.budget_usd is None else str(record.budget_usd),
        "budget_period": record.budget_period,
    }


def limiter_identity(record: KeyRecord) -> str:
    """What LiteLLM keys its RPM/TPM counters on: the tenant, so limits hold across its keys."""
    return f"tenant:{record.tenant_id}"


@dataclass(frozen=True)
class TenantLimits:
    """What admission checks for one request: the tenant's model allow-list and its budget."""

    tenant_id: str
    allowed_models: tuple[str, ...]
    budget_usd: Decimal | None
    budget_period: str

    def allows(self, model: str) -> bool:
        """The model allow-list: empty allows every model."""
        return not self.allowed_models or model in self.allowed_models


def limits_from_auth(metadata: Mapping[str, Any] | None, models: Iterable[str] | None) -> TenantLimits | None:
    """The limits of a request our auth let in; None for the admin master key (no tenant)."""
    metadata = metadata or {}
    tenant_id = metadata.get("tenant_id")
    if not tenant_id:
        return None
    budget = metadata.get("budget_usd")
    return TenantLimits(
        tenant_id=tenant_id,
        allowed_models=tuple(models or ()),
        budget_usd=Decimal(budget) if budget is not None else None,
        budget_period=metadata.get("budget_period") or DEFAULT_PERIOD,
    )


def auth_metadata_of_payload(payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The tenant id our auth attached to a logged request, and the auth metadata it came with."""
    metadata = payload.get("metadata") or {}
    auth_meta = metadata.get(PAYLOAD_AUTH_METADATA) or {}
    return auth_meta.get("tenant_id") or metadata.get("user_api_key_team_id"), auth_meta
