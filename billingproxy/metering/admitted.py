"""Admitted ⇒ recorded: a compact "admitted" JSON line at admission, before the upstream call.

An instance killed after it called the provider but before it recorded the answer leaves this line
and no request line. ``usage replay`` and ``usage audit`` turn such an admitted request into a row
with status ``interrupted`` and an estimated cost (``interrupted_record``), so every call the
provider may bill us for is on the ledger.

The line holds the request id, tenant, key, model, call type, stream flag, reservation, the
instance (its budget holder id) and a prompt size (characters of the text parts: counting tokens
with a tokenizer here would cost ~0.1-0.25 ms per request on the request path, measured; the
audit divides by 4 instead and flags the row as estimated). Never prompt text. Written to stdout
like the request line: no network.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billingproxy.metering.pricing import ZERO, PriceTable
from billingproxy.metering.record import UsageRecord, parse_time

__all__ = ["MESSAGE", "Admitted", "emit", "interrupted_record", "prompt_chars", "read_admitted"]

MESSAGE = "litellm_admitted"
CHARS_PER_TOKEN = 4  # the documented estimate of an interrupted request's prompt tokens


def prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of a body's text parts (the common shapes only: a few µs)."""
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
    for key in ("prompt", "input", "instructions", "system"):
        value = body.get(key)
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) for v in value if isinstance(v, str))
    return total


def emit(
    request_id: str,
    auth_meta: Mapping[str, Any],
    model: str,
    call_type: str,
    body: Mapping[str, Any],
    reservation: Decimal | None,
    instance: str | None = None,
) -> None:
    line = {
        "severity": "INFO",
        "logger": "billingproxy.admitted",
        "message": MESSAGE,
        "request_id": request_id,
        "tenant_id": auth_meta.get("tenant_id"),
        "api_key_id": auth_meta.get("api_key_id"),
        "customer_id": auth_meta.get("customer_id"),
        "model": model,
        "call_type": call_type,
        "stream": bool(body.get("stream")),
        "prompt_chars": prompt_chars(body),
        "reservation_usd": None if reservation is None else str(reservation),
        "start_time": datetime.now(UTC).isoformat(),
        "instance": instance,  # the budget holder: `usage audit` releases a killed one's doubt
    }
    sys.stdout.write(json.dumps(line, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Admitted:
    request_id: str
    tenant_id: str
    api_key_id: str | None
    customer_id: str | None
    model: str
    call_type: str | None
    stream: bool
    prompt_chars: int
    start_time: datetime
    instance: str | None = None

    @classmethod
    def from_line(cls, data: Mapping[str, Any]) -> Admitted:
        return cls(
            request_id=str(data["request_id"]),
            tenant_id=str(data["tenant_id"]),
            api_key_id=data.get("api_key_id"),
            customer_id=data.get("customer_id"),
            model=str(data.get("model")),
            call_type=data.get("call_type"),
            stream=bool(data.get("stream")),
            prompt_chars=int(data.get("prompt_chars") or 0),
            start_time=parse_time(data["start_time"]),
            instance=data.get("instance"),
        )


def read_admitted(lines: Iterable[str]) -> list[Admitted]:
    """The admitted lines among our stdout lines (NDJSON); anything else is skipped."""
    found = []
    for raw in lines:
        if MESSAGE not in raw:
            continue
        try:
            data = json.loads(raw)
            if data.get("message") == MESSAGE and data.get("tenant_id"):
                found.append(Admitted.from_line(data))
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by the kill
    return found


def interrupted_record(admitted: Admitted, prices: PriceTable, policy: str = "estimate") -> UsageRecord:
    """The row of an admitted request that never completed. ``estimate``: its prompt tokens
    (characters / 4) at the model's input price, no completion tokens (the provider's answer, if
    any, was never relayed); ``zero``: the tokens are kept, the cost is 0."""
    prompt = -(-admitted.prompt_chars // CHARS_PER_TOKEN)
    cost = prices.cost(admitted.model, prompt, 0) if policy == "estimate" else ZERO
    return UsageRecord(
        request_id=admitted.request_id,
        tenant_id=admitted.tenant_id,
        api_key_id=admitted.api_key_id,
        model=admitted.model,
        model_group=admitted.model,
        provider=None,
        call_type=admitted.call_type,
        prompt_tokens=prompt,
        completion_tokens=0,
        cached_tokens=0,
        reasoning_tokens=0,
        total_tokens=prompt,
        cost_usd=cost,
        latency_ms=None,
        status="interrupted",
        http_status=None,
        error_type="interrupted",
        stream=admitted.stream,
        cache_hit=False,
        customer_id=admitted.customer_id,
        trace_id=None,
        start_time=admitted.start_time,
        end_time=None,
        usage_estimated=True,
    )
