"""Re-rating: a tenant's billed rows over a period priced again with the current price book.

A dry run shows per model what the rows were billed and what the current versions and rate cards
say. ``apply`` updates the rows (cost and version id), the daily rollup and the billing accrual by
the difference, and records an audit entry, in one transaction; the relay's next seal then sends
the difference as new entries of the affected windows (deterministic identifiers: window and
seal number). A second re-rate finds nothing to change. A lower price is not sent as a negative
meter event: it is carried against the tenant's next usage (billing_carry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billingproxy.config import billing_window_s
from billingproxy.errors import InvalidInput
from billingproxy.metering.store import rerate_rows
from billingproxy.prices.book import PriceBook
from billingproxy.prices.model import TokenUsage
from billingproxy.prices.store import PriceStore
from billingproxy.tenants import TenantStore

__all__ = ["RerateModel", "RerateResult", "rerate"]

# Billable rows only: what the accrual (and so the outbox) counted.
_ROWS = """SELECT request_id, start_time, model, prompt_tokens, completion_tokens, cached_tokens,
       reasoning_tokens, cache_write_5m_tokens, cache_write_1h_tokens, input_audio_tokens, input_image_tokens,
       output_audio_tokens, cost_usd, price_version_id
FROM litellm_usage
WHERE tenant_id = %s AND start_time >= %s AND start_time < %s AND status = 'success'
  AND NOT (cache_hit AND cost_usd = 0)
ORDER BY start_time
FOR UPDATE"""


@dataclass
class RerateModel:
    model: str
    rows: int = 0
    changed: int = 0
    billed_usd: Decimal = Decimal(0)
    rerated_usd: Decimal = Decimal(0)

    @property
    def difference_usd(self) -> Decimal:
        return self.rerated_usd - self.billed_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "rows": self.rows,
            "changed": self.changed,
            "billed_usd": str(self.billed_usd),
            "rerated_usd": str(self.rerated_usd),
            "difference_usd": str(self.difference_usd),
        }


@dataclass
class RerateResult:
    tenant_id: str
    period_from: datetime
    period_to: datetime
    applied: bool
    models: list[RerateModel] = field(default_factory=list)
    audit_id: int | None = None
    unpriced: int = 0  # rows whose model has no version at their start time: left alone

    @property
    def difference_usd(self) -> Decimal:
        return sum((m.difference_usd for m in self.models), Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "from": self.period_from.isoformat(),
            "to": self.period_to.isoformat(),
            "applied": self.applied,
            "audit_id": self.audit_id,
            "difference_usd": str(self.difference_usd),
            "unpriced_rows": self.unpriced,
            "models": [m.to_json() for m in self.models],
        }


def rerate(
    conn: psycopg.Connection,
    tenant_ref: str,
    period_from: datetime,
    period_to: datetime,
    *,
    apply: bool = False,
    by: str = "cli",
    window_s: int | None = None,
) -> RerateResult:
    if period_to <= period_from:
        raise InvalidInput("--to must be after --from")
    tenant = TenantStore(conn).get_tenant(tenant_ref)
    book = PriceBook()
    with conn.transaction():
        book.load(conn)
        result = RerateResult(tenant.id, period_from, period_to, applied=False)
        per_model: dict[str, RerateModel] = {}
        changes = []
        with conn.cursor(row_factory=dict_row) as cur:
            # Serialise re-rates of one tenant (the row locks below cover the rows themselves).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('billingproxy_rerate'), hashtext(%s))", (tenant.id,))
            rows = cur.execute(_ROWS, (tenant.id, period_from, period_to)).fetchall()
        for row in rows:
            usage = TokenUsage(
                row["prompt_tokens"],
                row["completion_tokens"],
                row["cached_tokens"],
                row["cache_write_5m_tokens"],
                row["cache_write_1h_tokens"],
                row["reasoning_tokens"],
                row["input_audio_tokens"],
                row["input_image_tokens"],
                row["output_audio_tokens"],
            )
            cost, version_id = book.cost(row["model"], usage, at=row["start_time"], tenant_id=tenant.id)
            if version_id is None:
                result.unpriced += 1
                continue
            stats = per_model.setdefault(row["model"], RerateModel(row["model"]))
            stats.rows += 1
            stats.billed_usd += row["cost_usd"]
            stats.rerated_usd += cost
            if cost != row["cost_usd"] or version_id != row["price_version_id"]:
                stats.changed += 1
                changes.append((row["request_id"], row["start_time"], row["model"], row["cost_usd"], cost, version_id))
        result.models = sorted(per_model.values(), key=lambda m: m.model)
        if apply and changes:
            rerate_rows(conn, tenant.id, changes, window_s or billing_window_s())
            result.audit_id = PriceStore(conn).record_rerate(
                tenant.id, period_from, period_to, len(changes), result.difference_usd, by
            )
            result.applied = True
    return result
