"""count_tokens admission (billingproxy.access.token_counting): windows, levels, no partial counts."""

from __future__ import annotations

import pytest

from billingproxy.access import TokenCountLimiter
from billingproxy.errors import Refusal


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_each_limited_identity_is_counted_and_a_refusal_counts_nothing():
    clock = Clock(120.0)
    limiter = TokenCountLimiter(clock)
    for _ in range(2):
        limiter.admit([("tenant:t", 5), ("key:k", 2), ("key:other", None)])
    with pytest.raises(Refusal) as refused:
        limiter.admit([("tenant:t", 5), ("key:k", 2)])
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers["retry-after"] == "61"
    # The refused call counted nowhere: the tenant has 3 left, for another key of it.
    for _ in range(3):
        limiter.admit([("tenant:t", 5), ("key:k2", None)])
    with pytest.raises(Refusal):
        limiter.admit([("tenant:t", 5)])


def test_the_window_turns_with_the_minute():
    clock = Clock(179.5)
    limiter = TokenCountLimiter(clock)
    limiter.admit([("key:k", 1)])
    with pytest.raises(Refusal) as refused:
        limiter.admit([("key:k", 1)])
    assert refused.value.headers["retry-after"] == "1"
    clock.now = 180.0
    limiter.admit([("key:k", 1)])
