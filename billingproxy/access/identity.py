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
    "tenant_limiter_identity",
]

PAYLOAD_AUTH_METADATA = "user_api_key_auth_metadata"  # the logging payload's copy of our metadata


def auth_metadata(record: KeyRecord) -> dict[str, Any]:
    """The metadata our auth attaches to every request of this key (JSON-safe values)."""
    return {
        "tenant_id": record.tenant_id,
        "api_key_id": record.key_id,
        "customer_id": record.customer_id,
        "budget_usd": _text(record.budget_usd),
        "budget_period": record.budget_period,
        "key_budget_usd": _text(record.key_budget_usd),
        "key_budget_period": record.key_budget_period,
        "end_user_budget_usd": _text(record.end_user_budget_usd),
        "end_user_budget_period": record.end_user_budget_period,
        **_model_limits(record),
    }


def _model_limits(record: KeyRecord) -> dict[str, dict[str, int]]:
    """The key's per-model limits as LiteLLM's rate limiter reads them from the key's metadata
    (``model_rpm_limit`` / ``model_tpm_limit``: model → limit, counted per api_key and model)."""
    rpm = {model: value for model, value, _ in record.key_model_limits if value is not None}
    tpm = {model: value for model, _, value in record.key_model_limits if value is not None}
    return {name: limits for name, limits in (("model_rpm_limit", rpm), ("model_tpm_limit", tpm)) if limits}


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _amount(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def limiter_identity(record: KeyRecord) -> str:
    """What LiteLLM keys a key's RPM/TPM counters on (``api_key``): the key; the gateway token,
    which has no key row, counts as its tenant."""
    return f"key:{record.key_id}" if record.key_id else tenant_limiter_identity(record)


def tenant_limiter_identity(record: KeyRecord) -> str:
    """What LiteLLM keys the tenant's RPM/TPM counters on (``user_id``), so they hold across its keys."""
    return f"tenant:{record.tenant_id}"


@dataclass(frozen=True)
class TenantLimits:
    """What admission checks for one request: the tenant's model allow-list and its budget."""

    tenant_id: str
    allowed_models: tuple[str, ...]
    budget_usd: Decimal | None
    budget_period: str
    key_id: str | None = None
    key_budget_usd: Decimal | None = None
    key_budget_period: str = DEFAULT_PERIOD
    end_user_budget_usd: Decimal | None = None  # the tenant's default for every end user
    end_user_budget_period: str = "daily"

    def end_user_budget(
        self, end_user: str | None, overrides: Mapping[str, tuple[Decimal | None, str | None]]
    ) -> tuple[Decimal, str] | None:
        """The end user's budget and period: its override if it has one, else the tenant's default."""
        if end_user is None:
            return None
        override = overrides.get(end_user)
        if override is None:
            budget, period = self.end_user_budget_usd, None
        else:
            budget, period = override
        return None if budget is None else (budget, period or self.end_user_budget_period)

    def allows(self, model: str) -> bool:
        """The model allow-list: empty allows every model."""
        return not self.allowed_models or model in self.allowed_models


def limits_from_auth(metadata: Mapping[str, Any] | None, models: Iterable[str] | None) -> TenantLimits | None:
    """The limits of a request our auth let in; None for the admin master key (no tenant)."""
    metadata = metadata or {}
    tenant_id = metadata.get("tenant_id")
    if not tenant_id:
        return None
    return TenantLimits(
        tenant_id=tenant_id,
        allowed_models=tuple(models or ()),
        budget_usd=_amount(metadata.get("budget_usd")),
        budget_period=metadata.get("budget_period") or DEFAULT_PERIOD,
        key_id=metadata.get("api_key_id"),
        key_budget_usd=_amount(metadata.get("key_budget_usd")),
        key_budget_period=metadata.get("key_budget_period") or DEFAULT_PERIOD,
        end_user_budget_usd=_amount(metadata.get("end_user_budget_usd")),
        end_user_budget_period=metadata.get("end_user_budget_period") or "daily",
    )


def auth_metadata_of_payload(payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The tenant id our auth attached to a logged request, and the auth metadata it came with."""
    metadata = payload.get("metadata") or {}
    auth_meta = metadata.get(PAYLOAD_AUTH_METADATA) or {}
    return auth_meta.get("tenant_id") or metadata.get("user_api_key_team_id"), auth_meta
