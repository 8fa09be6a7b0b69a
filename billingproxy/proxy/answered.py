"""Answered ⇒ recorded: the usage record is made before the response leaves the proxy.

LiteLLM's logging callbacks run on a background worker after the response went out, so a SIGKILL
between the two loses an answered request. LiteLLM awaits the post-call success hook before it
returns a non-streaming response, and the streaming iterator hook wraps a stream: from there we
build the record out of the response object and the request data (the standard logging payload
does not exist yet), in the payload's shape so ``record_from_payload`` stays the one builder.
The later logging callback then only dedups by call id.

Duck-typed on purpose: this package never imports litellm. No I/O but stdout and an in-memory
queue (``pipeline.record_usage``), so the early record costs no latency.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from billingproxy.access.attribution import request_auth_metadata
from billingproxy.access.identity import PAYLOAD_AUTH_METADATA
from billingproxy.metering import UsageRecord
from billingproxy.proxy.pipeline import record_usage

__all__ = ["payload_of_response", "record_answered", "record_logged", "usage_dict"]

log = logging.getLogger("billingproxy.answered")

# Call ids recorded early, waiting for LiteLLM's logging callback to be skipped. Bounded: a
# callback that never comes (a crash of LiteLLM's worker) must not grow memory forever.
_RECORDED: OrderedDict[str, None] = OrderedDict()
_RECORDED_MAX = 100_000


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


_ANTHROPIC_MESSAGES = frozenset({"anthropic_messages", "aanthropic_messages"})
_RESPONSES = frozenset({"responses", "aresponses"})


def usage_dict(usage: Any, call_type: str | None = None) -> dict[str, Any]:
    """LiteLLM's ``Usage`` object (or a dict) as the plain dict ``record_from_payload`` reads.

    The Responses API's and Anthropic's ``input_tokens``/``output_tokens`` shapes are read as
    LiteLLM's logging normalises them, for their own call types only (the two count ``input_tokens``
    differently); any other shape is left to the logging callback (an empty dict)."""
    if not usage:
        return {}
    if _get(usage, "prompt_tokens") is None:
        return _input_output_usage(usage, call_type)
    prompt_details = _get(usage, "prompt_tokens_details")
    completion_details = _get(usage, "completion_tokens_details")
    # Cache writes (Anthropic's, through the OpenAI route) are priced apart: keep their total and
    # their 5-minute / 1-hour split, as the logging payload would carry them.
    writes = _get(prompt_details, "cache_creation_token_details") or _get(usage, "cache_creation")
    return {
        "prompt_tokens": _get(usage, "prompt_tokens") or 0,
        "completion_tokens": _get(usage, "completion_tokens") or 0,
        "total_tokens": _get(usage, "total_tokens") or 0,
        "cache_read_input_tokens": _get(usage, "cache_read_input_tokens") or 0,
        "cache_creation_input_tokens": _get(usage, "cache_creation_input_tokens") or 0,
        "prompt_tokens_details": {
            "cached_tokens": _get(prompt_details, "cached_tokens") or 0,
            "cache_creation_tokens": _get(prompt_details, "cache_creation_tokens") or 0,
            "cache_creation_token_details": {
                lifetime: _get(writes, lifetime) or 0
                for lifetime in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
            },
            # Priced apart where a price version sets audio / image prices.
            "audio_tokens": _get(prompt_details, "audio_tokens") or 0,
            "image_tokens": _get(prompt_details, "image_tokens") or 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": _get(completion_details, "reasoning_tokens") or 0,
            "audio_tokens": _get(completion_details, "audio_tokens") or 0,
        },
    }


def _input_output_usage(usage: Any, call_type: str | None) -> dict[str, Any]:
    input_tokens, output_tokens = _get(usage, "input_tokens"), _get(usage, "output_tokens")
    if not isinstance(input_tokens, int) or not isinstance(output_tokens, int):
        return {}
    if call_type in _RESPONSES:
        # OpenAI's Responses API: input_tokens includes the cached ones (LiteLLM's
        # _transform_response_api_usage_to_chat_usage maps them one to one).
        cached = _get(_get(usage, "input_tokens_details"), "cached_tokens") or 0
        reasoning = _get(_get(usage, "output_tokens_details"), "reasoning_tokens") or 0
        return usage_dict(
            {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": _get(usage, "total_tokens") or input_tokens + output_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            }
        )
    if call_type in _ANTHROPIC_MESSAGES:
        # Anthropic's input_tokens excludes cache reads and writes; LiteLLM's calculate_usage adds
        # both back into prompt_tokens (and the adapter from OpenAI-shaped providers subtracts them).
        read = _get(usage, "cache_read_input_tokens") or 0
        written = _get(usage, "cache_creation_input_tokens") or 0
        split = _get(usage, "cache_creation") or {}
        prompt = input_tokens + read + written
        return usage_dict(
            {
                "prompt_tokens": prompt,
                "completion_tokens": output_tokens,
                "total_tokens": prompt + output_tokens,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": written,
                "prompt_tokens_details": {
                    "cached_tokens": read,
                    "cache_creation_tokens": written,
                    "cache_creation_token_details": split,
                },
            }
        )
    return {}


def _epoch(value: Any) -> float | None:
    """LiteLLM's start time is a naive local datetime; ``timestamp()`` reads it as local time."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def payload_of_response(
    data: Mapping[str, Any],
    auth_meta: Mapping[str, Any] | None,
    *,
    usage: Mapping[str, Any],
    hidden: Mapping[str, Any] | None,
    stream: bool,
    end_time: float,
    start_time: float | None = None,
) -> dict[str, Any]:
    """A standard-logging-payload-shaped dict for one answered request (no prompt or answer text).
    ``start_time``: when LiteLLM's logging object has none yet (a request cut before the call)."""
    logging_obj = data.get("litellm_logging_obj")
    details = _get(logging_obj, "model_call_details") or {}
    metadata = data.get("metadata") or {}
    headers = (data.get("proxy_server_request") or {}).get("headers") or {}
    hidden = hidden or {}
    # The request's copy of our auth metadata carries its attribution (end user, tags); the cached
    # key's own metadata does not.
    auth_meta = request_auth_metadata(data) or auth_meta
    return {
        "litellm_call_id": data.get("litellm_call_id"),
        "status": "success",
        "model_group": metadata.get("model_group") or data.get("model"),
        "model": data.get("model"),
        "custom_llm_provider": hidden.get("custom_llm_provider") or details.get("custom_llm_provider"),
        "call_type": _get(logging_obj, "call_type"),
        "cache_hit": bool(hidden.get("cache_hit") or details.get("cache_hit")),
        "stream": stream,
        "startTime": _epoch(_get(logging_obj, "start_time")) or start_time,
        "endTime": end_time,
        "metadata": {
            PAYLOAD_AUTH_METADATA: dict(auth_meta or {}),
            "usage_object": dict(usage),
            "requester_metadata": {"headers": headers},
        },
    }


def record_answered(payload: dict[str, Any], **outcome: Any) -> UsageRecord | None:
    """Record one answered request now; the logging callback for its call id is then skipped."""
    call_id = payload.get("litellm_call_id")
    if not call_id or call_id in _RECORDED:
        return None
    record = record_usage(payload, **outcome)
    _RECORDED[str(call_id)] = None
    if len(_RECORDED) > _RECORDED_MAX:
        _RECORDED.popitem(last=False)
    return record


def record_logged(payload: dict[str, Any], **outcome: Any) -> UsageRecord | None:
    """LiteLLM's logging callback: completes what was not recorded early, dedups what was."""
    call_id = str(payload.get("litellm_call_id") or payload.get("id"))
    if call_id in _RECORDED:
        del _RECORDED[call_id]
        return None
    return record_usage(payload, **outcome)


def was_recorded(call_id: str) -> bool:
    return call_id in _RECORDED
