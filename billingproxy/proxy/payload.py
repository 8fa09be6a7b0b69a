"""LiteLLM's standard logging payload (``kwargs["standard_logging_object"]``) → a usage record.

The payload arrives as a plain dict; this module does not import litellm. Prompt and response text
are never copied into a record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billingproxy.access import auth_metadata_of_payload
from billingproxy.access.attribution import attribution_of_auth_metadata
from billingproxy.metering import ZERO, PriceTable, UsageRecord, charged
from billingproxy.prices import PriceBook, TokenUsage

__all__ = ["cache_writes", "record_from_payload"]

INT4_MAX = 2**31 - 1  # the token columns' range


def _int(value: Any) -> int:
    try:
        return min(max(int(value or 0), 0), INT4_MAX)  # a buggy upstream's count must not poison a batch
    except (TypeError, ValueError):
        return 0


def _detail(usage: dict[str, Any], section: str, key: str) -> int:
    details = usage.get(section)
    return _int(details.get(key)) if isinstance(details, dict) else 0


def _usage_object(payload: dict[str, Any]) -> dict[str, Any]:
    for source in (payload.get("metadata") or {}, payload.get("hidden_params") or {}, payload.get("response") or {}):
        usage = source.get("usage_object") or source.get("usage")
        if isinstance(usage, dict) and usage:
            return usage
    return {}


def _trace_id(payload: dict[str, Any]) -> str | None:
    """The Cloud Trace id from X-Cloud-Trace-Context or W3C traceparent, when the caller sent one."""
    headers = ((payload.get("metadata") or {}).get("requester_metadata") or {}).get("headers") or {}
    headers = {str(k).lower(): str(v) for k, v in headers.items()}
    cloud = headers.get("x-cloud-trace-context")
    if cloud:
        return cloud.split("/", 1)[0][:64] or None
    parent = headers.get("traceparent", "").split("-")
    if len(parent) >= 3 and len(parent[1]) == 32:
        return parent[1]
    return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def cache_writes(usage: dict[str, Any]) -> tuple[int, int]:
    """(5-minute, 1-hour) cache-write tokens. LiteLLM reports the total as
    ``cache_creation_input_tokens`` (part of prompt_tokens) and, when Anthropic split it, the
    split under ``prompt_tokens_details.cache_creation_token_details`` (or the raw
    ``cache_creation``); what is not marked 1-hour is the 5-minute cache (Anthropic's default)."""
    total = _int(usage.get("cache_creation_input_tokens")) or _detail(
        usage, "prompt_tokens_details", "cache_creation_tokens"
    )
    details = (usage.get("prompt_tokens_details") or {}).get("cache_creation_token_details")
    if not isinstance(details, dict):
        details = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    one_hour = min(_int(details.get("ephemeral_1h_input_tokens")), total)
    return total - one_hour, one_hour


def record_from_payload(
    payload: dict[str, Any],
    prices: PriceTable,
    *,
    status: str | None = None,
    http_status: int | None = None,
    error_type: str | None = None,
    bill_cache_hits: bool = False,
    price_book: PriceBook | None = None,
    usage_estimated: bool = False,
) -> UsageRecord | None:
    """A record for a request that carried a tenant, or None (refused before auth, health checks)."""
    tenant_id, auth_meta = auth_metadata_of_payload(payload)
    if not tenant_id:
        return None
    usage = _usage_object(payload)
    prompt = _int(payload.get("prompt_tokens") or usage.get("prompt_tokens"))
    completion = _int(payload.get("completion_tokens") or usage.get("completion_tokens"))
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens") or _int(usage.get("cache_read_input_tokens"))
    reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    # By modality (OpenAI's usage object; LiteLLM fills image_tokens for the providers that count them).
    audio_in = min(_detail(usage, "prompt_tokens_details", "audio_tokens"), prompt)
    image_in = min(_detail(usage, "prompt_tokens_details", "image_tokens"), prompt - audio_in)
    audio_out = min(_detail(usage, "completion_tokens_details", "audio_tokens"), completion)
    status = status or ("success" if payload.get("status") == "success" else "failure")
    model = str(payload.get("model_group") or payload.get("model") or "unknown")
    cache_hit = bool(payload.get("cache_hit"))
    cost, version_id = ZERO, None
    start = _timestamp(payload.get("startTime")) or datetime.now(UTC)
    write_5m, write_1h = cache_writes(usage)
    if price_book is not None:
        # Priced by the request's start time: every instance bills a change from the same instant.
        tokens = TokenUsage(
            prompt, completion, min(cached, prompt), write_5m, write_1h, reasoning, audio_in, image_in, audio_out
        )
        list_cost, version_id = price_book.cost(model, tokens, at=start, tenant_id=str(tenant_id))
        if charged(status, cache_hit, bill_cache_hits):
            cost = list_cost
    elif charged(status, cache_hit, bill_cache_hits):
        cost = prices.cost(model, prompt, completion, cached)
    end = _timestamp(payload.get("endTime"))
    error = payload.get("error_information") or {}
    attribution = attribution_of_auth_metadata(auth_meta)
    if status != "success":
        http_status = _int(http_status) or _int(error.get("error_code")) or None
        error_type = error_type or error.get("error_class") or "unknown"
    return UsageRecord(
        request_id=str(payload.get("litellm_call_id") or payload.get("id")),
        tenant_id=str(tenant_id),
        api_key_id=auth_meta.get("api_key_id"),
        model=model,
        model_group=payload.get("model_group"),
        provider=payload.get("custom_llm_provider") or None,
        call_type=payload.get("call_type"),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=min(cached, prompt),
        reasoning_tokens=reasoning,
        total_tokens=_int(payload.get("total_tokens")) or prompt + completion,
        cost_usd=cost,
        latency_ms=round((end - start).total_seconds() * 1000) if end else None,
        status=status,
        http_status=http_status if status != "success" else (http_status or 200),
        error_type=error_type if status != "success" else None,
        stream=bool(payload.get("stream") or (payload.get("model_parameters") or {}).get("stream")),
        cache_hit=cache_hit,
        customer_id=auth_meta.get("customer_id"),
        trace_id=_trace_id(payload),
        start_time=start,
        end_time=end,
        price_version_id=version_id,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_audio_tokens=audio_out,
        end_user=attribution.end_user,
        tags=attribution.tags,
        client_request_id=attribution.client_request_id,
        usage_estimated=usage_estimated,
    )
