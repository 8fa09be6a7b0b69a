"""The billed amount: what a window of usage adds to each meter, in the meter's integer unit.

Integer meter values carry their rounding per tenant and meter: each seal reports
``floor(accrued) - reported``, so the reported sum always equals the database sum, floored to
the unit (one micro-dollar by default).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from billingproxy.config import Meter
from billingproxy.metering import WindowDelta

__all__ = ["MICRO", "Meter", "carry", "measure"]

MICRO = Decimal(1_000_000)


def measure(meter: Meter, delta: WindowDelta, multiplier: Decimal) -> Decimal:
    """The exact (unrounded) amount a window adds to a meter, in the meter's unit."""
    if meter.measure == "cost_microusd":
        return delta.cost_usd * MICRO * multiplier
    if meter.measure == "input_tokens":
        return Decimal(delta.input_tokens)
    return Decimal(delta.output_tokens)


def carry(accrued: Decimal, reported: int, amount: Decimal) -> tuple[Decimal, int]:
    """Add an exact amount to a meter's running total; returns (new total, units to report now)."""
    accrued += amount
    return accrued, int(accrued.to_integral_value(ROUND_FLOOR)) - reported
