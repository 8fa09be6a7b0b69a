"""Admission before the upstream call: the tenant's model allow-list and its budgets (tenant, key,
end user: all must have room).

Called from LiteLLM's pre-call hook with the request body; raises ``billingproxy.errors.Refusal``
with the HTTP status and OpenAI-style code the client should get. No network I/O unless this instance's
budget slice for the tenant has run out.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from billingproxy.access import TenantLimits
from billingproxy.budgets import BudgetExceeded, BudgetManager, BudgetStoreUnavailable
from billingproxy.budgets.scopes import end_user_scope, key_scope, tenant_scope
from billingproxy.config import ProxySettings
from billingproxy.errors import Refusal
from billingproxy.metering import OUTPUT_LIMITS, PriceTable, max_cost, output_token_limit, request_dimensions
from billingproxy.prices import ReservationPrices
from billingproxy.proxy.catalog import ModelCatalog
from billingproxy.proxy.contract import budget_refusal_headers

__all__ = [
    "MIN_SHRUNK_MAX_TOKENS",
    "TenantLimits",
    "admit",
    "affordable_output_tokens",
    "budget_levels",
    "check_chat_body",
    "check_output_limits",
]

_DEFAULTS = ProxySettings()
# Near the end of a budget, a request without an output limit gets one written that fits what is
# left, never below this: a budget with less room than this many output tokens refuses (429).
MIN_SHRUNK_MAX_TOKENS = 64
# Where an absent output limit is filled in, so a reservation really bounds the cost.
_OUTPUT_LIMIT_FIELD = {"acompletion": "max_tokens", "atext_completion": "max_tokens", "aresponses": "max_output_tokens"}


def check_output_limits(body: dict[str, Any], max_output_tokens: int = _DEFAULTS.max_output_tokens) -> None:
    """max_tokens & co. must be whole numbers in [1, max_output_tokens]: a negative or absurd
    value would otherwise reach the provider (and the budget reservation) unchecked."""
    for name in OUTPUT_LIMITS:
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_output_tokens:
            got = value if isinstance(value, int) and not isinstance(value, bool) else f"a {type(value).__name__}"
            raise Refusal(
                400,
                "invalid_max_tokens",
                f"'{name}' must be an integer between 1 and {max_output_tokens}, got {got}.",  # never echo text
                "invalid_request_error",
            )


_NUMBER = (int, float)
# Top-level chat fields and the JSON types they take. LiteLLM 1.106 answers a wrong-typed field
# with a 500 (e.g. "'float' object is not iterable"); this turns it into a clear 400.
_CHAT_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "tools": (list,),
    "functions": (list,),
    "tool_choice": (str, dict),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "n": (int,),
    "seed": (int,),
    "stream": (bool,),
    "stop": (str, list),
    "user": (str,),
    "response_format": (dict,),
    "stream_options": (dict,),
    "logit_bias": (dict,),
    "metadata": (dict,),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "parallel_tool_calls": (bool,),
}


def check_chat_body(body: dict[str, Any]) -> None:
    """Wrong-typed chat fields get a 400 naming the field (a few µs: isinstance checks only)."""
    for name, types in _CHAT_FIELD_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise Refusal(400, "invalid_parameter", f"'{name}' must be {expected}.", "invalid_request_error")
    for key in ("messages", "tools", "functions"):
        if not all(isinstance(item, dict) for item in body.get(key) or ()):
            raise Refusal(400, "invalid_parameter", f"'{key}' must be a list of objects.", "invalid_request_error")
    for index, message in enumerate(body.get("messages") or ()):
        _check_message(index, message)


def _check_message(index: int, message: dict[str, Any]) -> None:
    """A message's role is a string; its content a string, a list of parts (objects) or null."""
    content = message.get("content")
    if not isinstance(message.get("role", ""), str):
        problem = "'role' must be a string"
    elif not (content is None or isinstance(content, (str, list))):
        problem = "'content' must be a string, a list of content parts or null"
    elif isinstance(content, list) and not all(isinstance(part, dict) for part in content):
        problem = "'content' parts must be objects"
    else:
        return
    raise Refusal(400, "invalid_parameter", f"messages[{index}]: {problem}.", "invalid_request_error")


def budget_levels(
    limits: TenantLimits, end_user: str | None, end_user_budgets: Mapping[str, tuple[Decimal | None, str | None]]
) -> list[tuple[str, str, Decimal, str]]:
    """The budgets this request must fit, as (level, scope, budget, period), each only if set:
    the end user's (an override, else the tenant's default), the key's, the tenant's. Narrowest
    first: a request its end user cannot afford never holds (and races for) the tenant's slice."""
    levels = []
    end_user_budget = limits.end_user_budget(end_user, end_user_budgets)
    if end_user is not None and end_user_budget is not None:
        levels.append(("end_user", end_user_scope(limits.tenant_id, end_user), *end_user_budget))
    if limits.key_id is not None and limits.key_budget_usd is not None:
        levels.append(
            ("key", key_scope(limits.tenant_id, limits.key_id), limits.key_budget_usd, limits.key_budget_period)
        )
    if limits.budget_usd is not None:
        levels.append(("tenant", tenant_scope(limits.tenant_id), limits.budget_usd, limits.budget_period))
    return levels


async def admit(
    limits: TenantLimits,
    request_id: str,
    call_type: str,
    body: dict[str, Any],
    prices: PriceTable | ReservationPrices,
    budgets: BudgetManager,
    settings: ProxySettings = _DEFAULTS,
    catalog: ModelCatalog | None = None,
    *,
    end_user: str | None = None,
    end_user_budgets: Mapping[str, tuple[Decimal | None, str | None]] | None = None,
) -> None:
    check_output_limits(body, settings.max_output_tokens)
    if call_type == "acompletion":
        check_chat_body(body)
    model = str(body.get("model"))
    if not limits.allows(model):
        raise Refusal(403, "model_not_allowed", f"Model '{model}' is not allowed for this tenant.", "permission_error")
    unconfigured = catalog.refusal_reason(model) if catalog is not None else None
    if unconfigured:
        raise Refusal(503, "model_not_configured", unconfigured, "service_unavailable")
    if catalog is not None and catalog.knows(model) and prices.get(model) is None:
        # Never billed at zero: a configured model without a price version is refused.
        raise Refusal(
            503, "model_not_priced", f"Model '{model}' has no price yet; try again later.", "service_unavailable"
        )
    # One rule for every tenant, budgeted or not: an absent output limit stays absent where the
    # model declares its output cap (the provider then stops there, and the reservation assumes it);
    # a model that declares none gets BILLINGPROXY_DEFAULT_MAX_TOKENS written, so the cost is bounded.
    limit_field = _OUTPUT_LIMIT_FIELD.get(call_type)
    absent = limit_field is not None and output_token_limit(body) is None
    cap = catalog.output_cap(model) if catalog is not None else None
    if absent and cap is None:
        body[limit_field] = settings.default_max_tokens
    levels = budget_levels(limits, end_user, end_user_budgets or {})
    if not levels:
        return
    bound = cap or settings.default_max_tokens  # the output limit reserved when the client set none
    if catalog is not None:
        dimensions = catalog.request_dimensions(model, body, call_type)
    else:  # an unknown catalog: assume LiteLLM adds cache markers (the bound stays an upper bound)
        dimensions = request_dimensions(body, call_type, injects_cache_control=True)
    amount = max_cost(prices, model, body, bound, dimensions, cap)
    # Near the end of a budget, a request that set no limit gets one that fits what is left (down
    # to MIN_SHRUNK_MAX_TOKENS) rather than a refusal of a cheap question for a reservation of the
    # model's whole output cap; a limit the client chose is reserved whole or refused.
    floor = MIN_SHRUNK_MAX_TOKENS if absent and bound > MIN_SHRUNK_MAX_TOKENS else None
    minimum = None
    if floor is not None:
        minimum = max_cost(prices, model, {**body, limit_field: floor}, bound, dimensions, cap)
    try:
        reservation = await budgets.reserve_levels(request_id, levels, amount, minimum)
    except BudgetExceeded as exc:
        headers = budget_refusal_headers(exc.period)  # SDKs must not retry it
        raise Refusal(
            429, "budget_exceeded", str(exc), "budget_exceeded", headers=headers, details={"level": exc.level}
        ) from None
    except BudgetStoreUnavailable:
        # Fail closed: without the store we cannot prove the request fits the budget.
        raise Refusal(
            503, "budget_unavailable", "Budget check temporarily unavailable; retry.", "service_unavailable"
        ) from None
    if reservation is not None and minimum is not None and reservation.amount < amount:
        body[limit_field] = affordable_output_tokens(reservation.amount, minimum, floor, amount, bound)


def affordable_output_tokens(reserved: Decimal, floor_cost: Decimal, floor: int, full_cost: Decimal, full: int) -> int:
    """The largest output limit whose maximum cost fits ``reserved``: the cost is linear in the
    limit (prompt bound + limit x choices x output price), known at ``floor`` and at ``full``."""
    per_token = (full_cost - floor_cost) / (full - floor)
    if per_token <= 0:
        return full
    return min(full, floor + int((reserved - floor_cost) / per_token))
