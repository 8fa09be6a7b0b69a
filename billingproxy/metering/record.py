"""The usage record: one per request, success or not, and the rule for what of it is billable.

Built from LiteLLM's standard logging payload by ``billingproxy.proxy.payload``; rebuilt from JSON
(spill files, exported log lines) by ``UsageRecord.from_json``. Prompt and response text are
never part of a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["CHARGED_STATUSES", "STATUSES", "UsageRecord", "charged", "parse_time"]

STATUSES = ("success", "failure", "rejected", "cancelled", "interrupted")
# Statuses whose tokens the provider bills us for: a stream cut short (``cancelled``) and a request
# whose instance died mid-call (``interrupted``, estimated) are charged like an answer.
CHARGED_STATUSES = ("success", "cancelled", "interrupted")


def charged(status: str, cache_hit: bool, bill_cache_hits: bool) -> bool:
    """What is billable: a successful provider answer; a response-cache hit only under the "full"
    policy. Failed and rejected requests cost nothing (their tokens are kept for insight)."""
    return status in CHARGED_STATUSES and (bill_cache_hits or not cache_hit)


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
    price_version_id: int | None = None  # the price book version the cost was computed at
    cache_write_5m_tokens: int = 0  # Anthropic cache writes (part of prompt_tokens), per cache lifetime
    cache_write_1h_tokens: int = 0
    # Tokens by modality, parts of prompt_tokens / completion_tokens, where the provider reports them.
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_audio_tokens: int = 0
    # Attribution below the tenant (billingproxy.access.attribution), validated at admission.
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    client_request_id: str | None = None
    usage_estimated: bool = False  # the token counts are ours (a tokenizer), not the provider's

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: money as a decimal string, times as ISO-8601 with microseconds."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}  # asdict() deep-copies: 5x slower
        data["cost_usd"] = str(self.cost_usd)
        data["start_time"] = self.start_time.isoformat()
        data["end_time"] = self.end_time.isoformat() if self.end_time else None
        data["tags"] = list(self.tags)
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
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "input_audio_tokens",
            "input_image_tokens",
            "output_audio_tokens",
        ):
            values[name] = int(values[name] or 0)
        if values["price_version_id"] is not None:
            values["price_version_id"] = int(values["price_version_id"])
        values["cost_usd"] = Decimal(str(values["cost_usd"] or "0"))
        values["stream"] = bool(values["stream"])
        values["cache_hit"] = bool(values["cache_hit"])
        values["usage_estimated"] = bool(values["usage_estimated"])
        values["start_time"] = parse_time(values["start_time"])
        values["end_time"] = parse_time(values["end_time"]) if values["end_time"] else None
        values["tags"] = tuple(values["tags"] or ())  # lines written before attribution have none
        return cls(**values)

    @property
    def billable(self) -> bool:
        """Whether the record accrues to the billing outbox (``charged`` when it was built: a cache
        hit was charged exactly when it carries a cost)."""
        return self.status in CHARGED_STATUSES and not (self.cache_hit and not self.cost_usd)

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


_FIELD_NAMES = tuple(f.name for f in fields(UsageRecord))


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
