"""Budget threshold alerts to a webhook (``BILLINGPROXY_BUDGET_WEBHOOK_URL``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx

__all__ = ["threshold_webhook"]

log = logging.getLogger("billingproxy.budget")


def threshold_webhook(url: str) -> Callable[[str, int, Decimal], Awaitable[None]]:
    """A callback that POSTs each crossing to ``url`` (background task; failures only logged)."""

    async def notify(tenant_id: str, threshold: int, spent: Decimal) -> None:
        event = {"type": "budget.threshold_crossed", "tenant_id": tenant_id, "threshold_pct": threshold}
        event["spent_usd"] = str(spent)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(url, json=event)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("budget webhook failed for tenant %s: %s", tenant_id, exc)

    return notify
