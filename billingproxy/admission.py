"""Admission before the upstream call: the tenant's model allow-list and its budget.

Called from LiteLLM's pre-call hook with the request body; raises ``Refusal`` with the HTTP
status and OpenAI-style code the client should get. No network I/O unless this instance's
budget slice for the tenant has run out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billingproxy import budget
from billingproxy.budget import BudgetExceeded, BudgetManager, BudgetStoreUnavailable
from billingproxy.pricing import PriceTable

DEFAULT_MAX_TOKENS = int(os.environ.get("BILLINGPROXY_DEFAULT_MAX_TOKENS", "4096"))
# Where an absent output limit is filled in, so a reservation really bounds the cost.
_OUTPUT_LIMIT_FIELD = {"acompletion": "max_tokens", "atext_completion": "max_tokens", "aresponses": "max_output_tokens"}


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, type_: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.type = status, code, message, type_


@dataclass(frozen=True)
class TenantLimits:
    tenant_id: str
    allowed_models: tuple[str, ...]
    budget_usd: Decimal | None
    budget_period: str


async def admit(
    limits: TenantLimits,
    request_id: str,
    call_type: str,
    body: dict[str, Any],
    prices: PriceTable,
    budgets: BudgetManager,
) -> None:
    model = str(body.get("model"))
    if limits.allowed_models and model not in limits.allowed_models:
        raise Refusal(403, "model_not_allowed", f"Model '{model}' is not allowed for this tenant.", "permission_error")
    if limits.budget_usd is None:
        return
    limit_field = _OUTPUT_LIMIT_FIELD.get(call_type)
    if limit_field and budget.output_token_limit(body) is None:
        body[limit_field] = DEFAULT_MAX_TOKENS  # the reservation below assumes this cap
    amount = budget.max_cost(prices, model, body, DEFAULT_MAX_TOKENS)
    try:
        await budgets.reserve(request_id, limits.tenant_id, limits.budget_usd, limits.budget_period, amount)
    except BudgetExceeded as exc:
        raise Refusal(429, "budget_exceeded", str(exc), "budget_exceeded") from None
    except BudgetStoreUnavailable:
        # Fail closed: without the store we cannot prove the request fits the budget.
        raise Refusal(
            503, "budget_unavailable", "Budget check temporarily unavailable; retry.", "service_unavailable"
        ) from None
