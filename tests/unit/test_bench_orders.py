"""bench.compare's run order: balanced, so no variant always inherits the same predecessor's
trailing work on the proxy core (a plain rotation keeps each variant's predecessor fixed)."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.compare import balanced_orders


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_every_variant_runs_in_every_position_and_after_every_other_equally_often(count: int) -> None:
    names = [f"v{i}" for i in range(count)]
    orders = balanced_orders(names)

    assert all(sorted(order) == names for order in orders)
    positions = Counter((position, name) for order in orders for position, name in enumerate(order))
    assert set(positions.values()) == {len(orders) // count}, positions
    successions = Counter(pair for order in orders for pair in pairwise(order))
    assert len(successions) == count * (count - 1)  # every ordered pair of distinct variants
    assert len(set(successions.values())) == 1, successions


def test_a_rotation_would_fail_the_balance() -> None:
    names = ["a", "b", "c", "d"]
    rotation = [names[i:] + names[:i] for i in range(len(names))]
    successions = Counter(pair for order in rotation for pair in pairwise(order))
    assert len(successions) < len(names) * (len(names) - 1)  # the check above can fail
