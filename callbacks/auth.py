"""LiteLLM custom auth adapter: ``general_settings.custom_auth: callbacks.auth.user_api_key_auth``.

Translates our ``Principal`` into LiteLLM's ``UserAPIKeyAuth`` and our ``AuthError`` into
LiteLLM's OpenAI-style ``ProxyException``. All logic lives in ``billingproxy.auth`` (tokens) and
``billingproxy.routes`` (which routes a tenant token may call).
"""

from __future__ import annotations

import functools
import os

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth
from litellm.proxy.auth.auth_utils import get_request_route

from billingproxy import runtime
from billingproxy.auth import AuthError, KeyRecord, Principal
from billingproxy.routes import check_tenant_route


def to_user_api_key_auth(principal: Principal) -> UserAPIKeyAuth:
    if principal.is_admin:
        return UserAPIKeyAuth(
            api_key=principal.key_hash, token=principal.key_hash, user_role=LitellmUserRoles.PROXY_ADMIN
        )
    assert principal.record is not None
    template = _template(principal.record)
    # A shallow copy is ~10x cheaper than building the pydantic model; LiteLLM sets attributes on
    # the object it gets, so each request needs its own, and its own metadata dict.
    return template.model_copy(update={"metadata": dict(template.metadata)})


@functools.lru_cache(maxsize=10_000)
def _template(record: KeyRecord) -> UserAPIKeyAuth:
    """One validated UserAPIKeyAuth per cached key record (records are immutable and hashable)."""
    metadata = {
        "tenant_id": record.tenant_id,
        "api_key_id": record.key_id,
        "customer_id": record.customer_id,
        "budget_usd": None if record.budget_usd is None else str(record.budget_usd),
        "budget_period": record.budget_period,
    }
    # LiteLLM keys its RPM/TPM counters on ``api_key``: the tenant, so a tenant's limits hold
    # across all its keys (and instances, with Redis). It is never the raw token (LiteLLM logs it).
    # No ``team_id``: with one, LiteLLM deep-copies its whole config on every request (to look up
    # team callbacks), ~4 % of the proxy's CPU; the tenant travels in ``metadata`` instead.
    limiter_identity = f"tenant:{record.tenant_id}"
    return UserAPIKeyAuth(
        api_key=limiter_identity,
        token=limiter_identity,
        key_alias=record.key_id,
        models=list(record.allowed_models),
        rpm_limit=record.rpm_limit,
        tpm_limit=record.tpm_limit,
        metadata=metadata,
        user_role=LitellmUserRoles.INTERNAL_USER,
    )


class GatewayError(ProxyException):
    """A ProxyException whose body carries our error code (``invalid_api_key``…), OpenAI style.

    LiteLLM's own ProxyException puts the HTTP status in ``code``; the status still comes from it.
    """

    safe_to_log = True  # our own message: no provider text, no prompt (see log_redaction)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "code": self.openai_code}


def gateway_error(status: int, code: str, message: str, type_: str) -> GatewayError:
    return GatewayError(message=message, type=type_, param=None, code=status, openai_code=code)


MAX_BODY_BYTES = int(float(os.environ.get("BILLINGPROXY_MAX_BODY_MB", "8")) * 1024 * 1024)


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    # LiteLLM's own size limit is enterprise-only; refuse oversized bodies before any provider call.
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise gateway_error(
            413,
            "request_too_large",
            f"Request body over {MAX_BODY_BYTES // (1024 * 1024)} MB.",
            "invalid_request_error",
        )
    try:
        principal = await runtime.authenticator().authenticate(api_key)
        if not principal.is_admin:
            check_tenant_route(get_request_route(request))
    except AuthError as exc:
        raise gateway_error(exc.status, exc.code, exc.message, exc.type) from None
    return to_user_api_key_auth(principal)
