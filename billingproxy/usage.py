"""The usage record: one per request, built from LiteLLM's standard logging payload.

The payload arrives here as a plain dict (``kwargs["standard_logging_object"]``); this module
does not import litellm. Prompt and response text are never copied into a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billingproxy.pricing import ZERO, PriceTable

STATUSES = ("success", "failure", "rejected")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    tenant_id: str
    api_key_id: str | None
    model: str
    model_group: str | None
    provider: str | None
    call_type: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: Decimal
    latency_ms: int | None
    status: str
    http_status: int | None
    error_type: str | None
    stream: bool
    cache_hit: bool
    customer_id: str | None
    trace_id: str | None
    start_time: datetime
    end_time: datetime | None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: money as a decimal string, times as ISO-8601 with microseconds."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}  # asdict() deep-copies: 5x slower
        data["cost_usd"] = str(self.cost_usd)
        data["start_time"] = self.start_time.isoformat()
        data["end_time"] = self.end_time.isoformat() if self.end_time else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        """Inverse of to_json; extra keys (a log line's severity, labels…) are ignored."""
        values = {f.name: data.get(f.name) for f in fields(cls)}
        missing = [k for k in ("request_id", "tenant_id", "model", "status", "start_time") if not values[k]]
        if missing:
            raise ValueError(f"usage record lacks {', '.join(missing)}")
        if values["status"] not in STATUSES:
            raise ValueError(f"unknown usage status {values['status']!r}")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "total_tokens"):
            values[name] = int(values[name] or 0)
        values["cost_usd"] = Decimal(str(values["cost_usd"] or "0"))
        values["stream"] = bool(values["stream"])
        values["cache_hit"] = bool(values["cache_hit"])
        values["start_time"] = _parse_time(values["start_time"])
        values["end_time"] = _parse_time(values["end_time"]) if values["end_time"] else None
        return cls(**values)

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


_FIELD_NAMES = tuple(f.name for f in fields(UsageRecord))


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def tenant_of(payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The tenant id our auth attached to the request, and the auth metadata it came with."""
    metadata = payload.get("metadata") or {}
    auth_meta = metadata.get("user_api_key_auth_metadata") or {}
    return auth_meta.get("tenant_id") or metadata.get("user_api_key_team_id"), auth_meta


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


def record_from_payload(
    payload: dict[str, Any],
    prices: PriceTable,
    *,
    status: str | None = None,
    http_status: int | None = None,
    error_type: str | None = None,
    bill_cache_hits: bool = False,
) -> UsageRecord | None:
    """A record for a request that carried a tenant, or None (refused before auth, health checks)."""
    tenant_id, auth_meta = tenant_of(payload)
    if not tenant_id:
        return None
    usage = _usage_object(payload)
    prompt = _int(payload.get("prompt_tokens") or usage.get("prompt_tokens"))
    completion = _int(payload.get("completion_tokens") or usage.get("completion_tokens"))
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens") or _int(usage.get("cache_read_input_tokens"))
    reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    status = status or ("success" if payload.get("status") == "success" else "failure")
    model = str(payload.get("model_group") or payload.get("model") or "unknown")
    cache_hit = bool(payload.get("cache_hit"))
    cost = ZERO  # failed and rejected requests are not billed; their tokens are kept for insight
    if status == "success" and (bill_cache_hits or not cache_hit):
        cost = prices.cost(model, prompt, completion, cached)
    start = _timestamp(payload.get("startTime")) or datetime.now(UTC)
    end = _timestamp(payload.get("endTime"))
    error = payload.get("error_information") or {}
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
    )
