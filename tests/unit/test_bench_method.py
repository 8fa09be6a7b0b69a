"""bench.compare's method: a balanced run order, so no variant always inherits the same
predecessor's trailing work on the proxy core (a plain rotation keeps each variant's predecessor
fixed); figures pooled over the run; block sizes per concurrency."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.compare import Result, balanced_orders, per_concurrency, summarise


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


def _block(variant: str, round_no: int, requests: int, rps: float, cpu_ms: float) -> Result:
    return Result(variant, 8, requests, 0, rps, 50.0, 90.0, None, None, 300.0, cpu_ms, round_no=round_no)


def test_rates_are_pooled_over_the_run_not_averaged_per_block() -> None:
    # stock: 100 requests in 1 s, then 100 in 2 s (a slow spell): 200 in 3 s, not the mean 75/s
    results = [_block("stock", 0, 100, 100.0, 8.0), _block("stock", 1, 100, 50.0, 10.0)]
    results += [_block("ours", 0, 100, 80.0, 9.0), _block("ours", 1, 300, 60.0, 11.0)]

    summary = summarise(results)

    stock, ours = summary[("stock", 8)], summary[("ours", 8)]
    assert stock.rps == pytest.approx(200 / 3)
    assert ours.rps == pytest.approx(400 / (100 / 80 + 300 / 60))
    assert ours.rps_ratio == pytest.approx(ours.rps / stock.rps)
    assert stock.cpu_ms_per_request == pytest.approx(9.0)
    assert ours.cpu_ms_per_request == pytest.approx((9.0 * 100 + 11.0 * 300) / 400)
    assert ours.cpu_ratio == pytest.approx(10.5 / 9.0)
    assert ours.requests == 400


def test_block_sizes_are_one_value_or_one_per_concurrency() -> None:
    assert per_concurrency([40], [8, 64], "requests") == {8: 40, 64: 40}
    assert per_concurrency([40, 256], [8, 64], "requests") == {8: 40, 64: 256}
    with pytest.raises(SystemExit, match="--rounds: give one value, or one per --concurrency"):
        per_concurrency([1, 2, 3], [8, 64], "rounds")
