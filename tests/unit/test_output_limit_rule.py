"""One output-limit rule for every tenant (issue 17): what admission writes into a request without
``max_tokens`` depends on the model, not on whether the tenant has a budget."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billingproxy.access import TenantLimits
from billingproxy.budgets import BudgetManager
from billingproxy.config import ProxySettings
from billingproxy.errors import Refusal
from billingproxy.metering import PriceTable, max_cost
from billingproxy.proxy.admission import MIN_SHRUNK_MAX_TOKENS, admit
from billingproxy.proxy.catalog import ModelCatalog, ModelEntry
from tests.unit.test_budget_levels import MemoryStore

CAP = 16_384
PRICES = PriceTable.from_model_list(
    [
        {"model_name": name, "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}}
        for name in ("capped", "uncapped")
    ]
)
CATALOG = ModelCatalog(
    [ModelEntry("capped", "openai/capped", (), max_output_tokens=CAP), ModelEntry("uncapped", "openai/uncapped", ())]
)
SETTINGS = ProxySettings(default_max_tokens=4096)
QUESTION = [{"role": "user", "content": "a cheap question"}]


def tenant(budget: Decimal | None) -> TenantLimits:
    return TenantLimits("tn_1", (), budget, "monthly")


async def admitted(model: str, budget: Decimal | None, **fields) -> tuple[dict, Decimal | None]:
    """The body as admission leaves it, and what it reserved."""
    manager = BudgetManager(MemoryStore({"tn_1": budget or Decimal(0)}), "h", slice_fraction=Decimal(1))
    body = {"model": model, "messages": QUESTION, **fields}
    await admit(tenant(budget), "r1", "acompletion", body, PRICES, manager, SETTINGS, CATALOG)
    reservation = manager._reservations.get("r1")
    return body, reservation.amount if reservation else None


@pytest.mark.parametrize("budget", [None, Decimal(100)], ids=["unbudgeted", "budgeted"])
async def test_a_model_with_a_declared_cap_gets_no_limit_written_for_any_tenant(budget):
    body, reserved = await admitted("capped", budget)
    assert "max_tokens" not in body  # the provider stops at its own cap, for every tenant alike
    if budget is not None:  # and the reservation assumes that cap
        assert reserved == max_cost(PRICES, "capped", {**body, "max_tokens": CAP}, 1)


@pytest.mark.parametrize("budget", [None, Decimal(100)], ids=["unbudgeted", "budgeted"])
async def test_a_model_without_a_declared_cap_gets_the_gateway_default_for_every_tenant(budget):
    body, _ = await admitted("uncapped", budget)
    assert body["max_tokens"] == SETTINGS.default_max_tokens


async def test_a_client_limit_above_the_cap_is_reserved_at_the_cap():
    body, reserved = await admitted("capped", Decimal(100), max_tokens=100_000)
    assert body["max_tokens"] == 100_000  # the client's request is not rewritten; the provider refuses it
    assert reserved == max_cost(PRICES, "capped", {**body, "max_tokens": CAP}, 1)


async def test_near_the_end_of_a_budget_the_limit_written_fits_what_is_left():
    full = max_cost(PRICES, "capped", {"messages": QUESTION, "max_tokens": CAP}, 1)
    body, reserved = await admitted("capped", full / 3)
    assert MIN_SHRUNK_MAX_TOKENS <= body["max_tokens"] < CAP / 3 + 1
    assert max_cost(PRICES, "capped", body, 1) <= reserved <= full / 3  # the overdraft is zero by construction


async def test_a_client_limit_that_does_not_fit_is_refused_not_cut():
    full = max_cost(PRICES, "capped", {"messages": QUESTION, "max_tokens": CAP}, 1)
    with pytest.raises(Refusal) as refused:
        await admitted("capped", full / 3, max_tokens=CAP)
    assert refused.value.status == 429
