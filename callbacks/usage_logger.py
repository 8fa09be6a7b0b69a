"""LiteLLM callback adapter: ``litellm_settings.callbacks: callbacks.usage_logger.usage_logger``.

Hands LiteLLM's standard logging payload to ``billingproxy.runtime.record_usage`` (which only
enqueues) and enforces the tenant's model allow-list before the upstream call.
"""

from __future__ import annotations

import asyncio

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

from billingproxy import runtime, shutdown


async def _flush_litellm_logging_queue() -> None:
    """Success callbacks run on LiteLLM's background logging queue: drain it before the writer."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=3)


class ModelNotAllowed(ProxyException):
    """403 with ``code: model_not_allowed`` in the OpenAI-style body."""

    def __init__(self, model: str) -> None:
        super().__init__(
            message=f"Model '{model}' is not allowed for this tenant.",
            type="permission_error",
            param="model",
            code=403,
            openai_code="model_not_allowed",
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "code": self.openai_code}


class UsageLogger(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        allowed = user_api_key_dict.models
        model = data.get("model")
        if user_api_key_dict.team_id and allowed and model not in allowed:
            raise ModelNotAllowed(str(model))
        return data

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            runtime.record_usage(payload)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            exception = kwargs.get("exception")
            runtime.record_usage(
                payload,
                status="failure",
                http_status=getattr(exception, "status_code", None),
                error_type=type(exception).__name__ if exception else None,
            )


shutdown.on_exit("litellm-logging-queue", _flush_litellm_logging_queue, order=0)
usage_logger = UsageLogger()
