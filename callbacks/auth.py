"""LiteLLM custom auth adapter: ``general_settings.custom_auth: callbacks.auth.user_api_key_auth``.

Translates our ``Principal`` into LiteLLM's ``UserAPIKeyAuth`` and our ``Refusal`` into LiteLLM's
OpenAI-style ``ProxyException`` (``callbacks.wire``). All logic lives in ``billingproxy.proxy``.
"""

from __future__ import annotations

import functools

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
from litellm.proxy.auth.auth_utils import get_request_route
from litellm.proxy.common_utils.http_parsing_utils import read_request_body

from billingproxy import proxy
from billingproxy.errors import Refusal
from callbacks.wire import GatewayRefusal

proxy.start()


def to_user_api_key_auth(principal: proxy.Principal) -> UserAPIKeyAuth:
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
def _template(record: proxy.KeyRecord) -> UserAPIKeyAuth:
    """One validated UserAPIKeyAuth per cached key record (records are immutable and hashable)."""
    # LiteLLM's rate limiter (parallel_request_limiter, 1.106) counts per ``api_key`` (rpm_limit,
    # tpm_limit) and per ``user_id`` (user_rpm_limit, user_tpm_limit), across instances with Redis.
    # ``api_key`` is the key, with the key's limits; ``user_id`` the tenant, with the tenant's, so a
    # tenant's limits hold across all its keys. Neither is the raw token (LiteLLM logs them).
    # No ``team_id``: with one, LiteLLM deep-copies its whole config on every request (to look up
    # team callbacks), ~4 % of the proxy's CPU; the tenant travels in ``metadata`` instead.
    key_identity = proxy.limiter_identity(record)
    tenant_limited = record.rpm_limit is not None or record.tpm_limit is not None
    gateway = record.key_id is None  # the gateway token: its "key" is the tenant
    return UserAPIKeyAuth(
        api_key=key_identity,
        token=key_identity,
        key_alias=record.key_id,
        models=list(record.allowed_models),
        rpm_limit=record.rpm_limit if gateway else record.key_rpm_limit,
        tpm_limit=record.tpm_limit if gateway else record.key_tpm_limit,
        user_id=proxy.tenant_limiter_identity(record) if tenant_limited and not gateway else None,
        user_rpm_limit=record.rpm_limit,
        user_tpm_limit=record.tpm_limit,
        metadata=proxy.auth_metadata(record),
        user_role=LitellmUserRoles.INTERNAL_USER,
    )


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    try:
        # LiteLLM's own size limit is enterprise-only; refuse oversized bodies before any provider call.
        length = request.headers.get("content-length")
        limit = proxy.max_body_bytes()
        if length and length.isdigit() and int(length) > limit:
            raise Refusal(413, "request_too_large", f"Request body over {limit // (1024 * 1024)} MB.")
        route = get_request_route(request)
        principal = await proxy.authenticate(api_key, route)
        if proxy.counts_tokens(route):  # no pre-call hook runs for it: admitted here
            proxy.admit_token_count(principal, await read_request_body(request))
    except Refusal as refusal:
        raise GatewayRefusal(refusal) from None
    return to_user_api_key_auth(principal)
