"""Budget periods: the one place that knows what "monthly", "daily" and "total" mean (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from billingproxy.errors import InvalidInput

__all__ = ["BUDGET_PERIODS", "DEFAULT_PERIOD", "EPOCH", "period_start"]

BUDGET_PERIODS = ("monthly", "daily", "total")
DEFAULT_PERIOD = "monthly"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: str, now: datetime | None = None) -> datetime:
    """Start of the budget period holding ``now`` (UTC): calendar month, day, or all time."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "total":
        return EPOCH
    raise InvalidInput(f"unknown budget period {period!r}; one of {', '.join(BUDGET_PERIODS)}")
