"""LiteLLM callback adapter: ``litellm_settings.callbacks: callbacks.usage_logger.usage_logger``.

Before the call it runs our admission (model allow-list, budget reservation). The usage record is
made before the response leaves the proxy: LiteLLM awaits the post-call success hook before it
returns an answer, and the streaming iterator hook wraps a stream. The logging callback (LiteLLM's
background worker, after the response) only completes what those did not record (failures,
refusals) and dedups by call id. All decisions live in the billingproxy package.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from litellm.integrations.custom_logger import CustomLogger

from billingproxy import proxy
from billingproxy.errors import Refusal
from callbacks.wire import GatewayRefusal

proxy.start()
log = logging.getLogger("billingproxy.callbacks")

# Refusals of ours and of LiteLLM's rate limiter: recorded as `rejected`, never billed.
REJECTIONS = {"Refusal", "GatewayRefusal", "ProxyRateLimitError"}


async def _flush_litellm_logging_queue() -> None:
    """Success callbacks run on LiteLLM's background logging queue: drain it before the writer."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=proxy.drain_timeout(3))


class UsageLogger(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        try:
            await proxy.admit_request(
                user_api_key_dict.metadata, user_api_key_dict.models, data["litellm_call_id"], str(call_type), data
            )
        except Refusal as refusal:
            raise GatewayRefusal(refusal) from None
        return data

    async def async_post_call_response_headers_hook(
        self, data, user_api_key_dict, response, request_headers=None, litellm_call_info=None
    ):
        """x-request-id (= the row's request_id) on every response, success or failure."""
        return proxy.response_headers(data)

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        try:
            proxy.record_answer(data, user_api_key_dict.metadata, response)
        except Exception:  # metering must never turn an answer into an error; the logging callback still records
            log.exception("recording the answer failed")
        return None

    def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        # A plain function returning our generator: no extra trampoline per chunk.
        return proxy.metered_stream(response, request_data, user_api_key_dict.metadata)

    async def async_post_call_failure_hook(
        self, request_data, original_exception, user_api_key_dict, traceback_str=None
    ):
        # 499: the client left before the provider answered (general_settings.cancel_on_disconnect
        # cancelled the upstream call); no logging callback follows, so record and settle it here.
        if getattr(original_exception, "status_code", None) == 499:
            try:
                proxy.record_disconnected(request_data, user_api_key_dict.metadata)
            except Exception:
                log.exception("recording a disconnected request failed")
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            proxy.record_logged(payload)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object")
        if payload:
            exception = kwargs.get("exception")
            if getattr(exception, "status_code", None) == 499:
                return  # the client left: async_post_call_failure_hook records it as `cancelled`
            error_type = type(exception).__name__ if exception else None
            proxy.record_logged(
                payload,
                status="rejected" if error_type in REJECTIONS else "failure",
                http_status=getattr(exception, "status_code", None) or getattr(exception, "code", None),
                error_type=error_type,
            )


def _warm_tokenizer() -> None:
    # Importing it points TIKTOKEN_CACHE_DIR at LiteLLM's bundled tokenizer files (offline), which
    # our counts of cut requests use too; LiteLLM itself does it only at its first token count.
    import litellm.litellm_core_utils.default_encoding  # noqa: F401

    proxy.warm_tokenizer()


proxy.on_exit("litellm-logging-queue", _flush_litellm_logging_queue, order=0)
if not any(thread.name == "billingproxy-tokenizer" for thread in threading.enumerate()):
    threading.Thread(target=_warm_tokenizer, name="billingproxy-tokenizer", daemon=True).start()
usage_logger = UsageLogger()
