"""The response headers the SDKs rely on (issue 19's client contract), decided here so the
callback adapter only hands them to LiteLLM.

* ``x-request-id`` (and ``request-id``, the header the anthropic SDK reads) on every response:
  the row's ``request_id`` (LiteLLM's call id), so ``openai``'s and ``anthropic``'s
  ``_request_id`` name the row.
* A body LiteLLM did not read as JSON (sent without ``Content-Type: application/json``) arrives
  with no ``model``: a 400 that says so, not a 403 "model 'None' is not allowed".
* A budget refusal: ``x-should-retry: false`` (the openai and anthropic SDKs otherwise retry a
  429 twice, writing three rejected rows) and ``retry-after`` in seconds until the budget period
  resets (none for a ``total`` budget, which never does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from billingproxy.errors import Refusal
from billingproxy.tenants.periods import period_start

__all__ = ["budget_refusal_headers", "check_body_read", "period_reset", "response_headers"]


def period_reset(period: str, now: datetime | None = None) -> datetime | None:
    """When the budget period holding ``now`` ends (UTC); None for ``total``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = period_start(period, now)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "monthly":
        return (
            start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        )
    return None


def budget_refusal_headers(period: str, now: datetime | None = None) -> dict[str, str]:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    headers = {"x-should-retry": "false"}
    reset = period_reset(period, now)
    if reset is not None:
        headers["retry-after"] = str(max(1, math.ceil((reset - now).total_seconds())))
    return headers


def response_headers(data: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Headers for the response to LiteLLM's request ``data`` (success or failure)."""
    call_id = (data or {}).get("litellm_call_id")
    # openai reads x-request-id, anthropic request-id: both name the same row.
    return {"x-request-id": str(call_id), "request-id": str(call_id)} if call_id else None


def check_body_read(body: Mapping[str, Any], headers: Mapping[str, Any] | None) -> None:
    """Every metered route needs ``model``; without one, say why (most often: no Content-Type)."""
    if body.get("model") is not None:
        return
    content_type = {str(k).lower(): str(v) for k, v in (headers or {}).items()}.get("content-type", "")
    if "json" not in content_type:
        message = (
            "The request has no 'model': its body was not read as JSON. Send it with 'Content-Type: application/json'."
        )
    else:
        message = "The request has no 'model'."
    raise Refusal(400, "invalid_request_body", message, "invalid_request_error", param="model")
