"""LiteLLM callback adapter: ``litellm_settings.callbacks: callbacks.usage_logger.usage_logger``.

Before the call it runs our admission (model allow-list, budget reservation); after it, it hands
LiteLLM's standard logging payload to ``billingproxy.runtime.record_usage`` (which settles the
reservation and only enqueues). All decisions live in the billingproxy package.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

from billingproxy import runtime, shutdown
from billingproxy.admission import Refusal, TenantLimits, admit

# Refusals of ours and of LiteLLM's rate limiter: recorded as `rejected`, never billed.
REJECTIONS = {"Refusal", "GatewayRefusal", "ProxyRateLimitError"}


class GatewayRefusal(ProxyException):
    """A ProxyException whose body carries our error code (model_not_allowed, budget_exceeded)."""

    safe_to_log = True  # our own message: no provider text, no prompt (see log_redaction)

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            message=refusal.message, type=refusal.type, param=None, code=refusal.status, openai_code=refusal.code
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "code": self.openai_code}


async def _flush_litellm_logging_queue() -> None:
    """Success callbacks run on LiteLLM's background logging queue: drain it before the writer."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=3)


def _limits(user_api_key_dict) -> TenantLimits | None:
    metadata = user_api_key_dict.metadata or {}
    tenant_id = metadata.get("tenant_id")
    if not tenant_id:
        return None  # the admin master key: no tenant limits
    budget = metadata.get("budget_usd")
    return TenantLimits(
        tenant_id=tenant_id,
        allowed_models=tuple(user_api_key_dict.models or ()),
        budget_usd=Decimal(budget) if budget is not None else None,
        budget_period=metadata.get("budget_period") or "monthly",
    )


class UsageLogger(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        limits = _limits(user_api_key_dict)
        if limits is not None:
            try:
                await admit(limits, data["litellm_call_id"], str(call_type), data, runtime.prices(), runtime.budgets())
            except Refusal as refusal:
                raise GatewayRefusal(refusal) from None
        return data

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            runtime.record_usage(payload)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            exception = kwargs.get("exception")
            error_type = type(exception).__name__ if exception else None
            runtime.record_usage(
                payload,
                status="rejected" if error_type in REJECTIONS else "failure",
                http_status=getattr(exception, "status_code", None) or getattr(exception, "code", None),
                error_type=error_type,
            )


shutdown.on_exit("litellm-logging-queue", _flush_litellm_logging_queue, order=0)
usage_logger = UsageLogger()
