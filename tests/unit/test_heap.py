"""The start-up heap freeze: once, at the configured request, and only when enabled."""

from __future__ import annotations

import gc

import pytest

from billingproxy.proxy import heap


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(heap, "_seen", 0)
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process's collector as it was


def collectable(*objects: object) -> list[bool]:
    """Whether each object is still in a generation the collector walks (frozen ones are in none)."""
    walked = {id(o) for o in gc.get_objects()}
    return [id(o) in walked for o in objects]


def test_the_heap_is_frozen_at_the_configured_request_and_not_before(fresh):
    early = []  # tracked before the freeze: frozen with the rest
    for _ in range(heap.FREEZE_AFTER_REQUESTS - 1):
        heap.note_request(True)
    assert gc.get_freeze_count() == 0 and collectable(early) == [True]
    heap.note_request(True)
    assert gc.get_freeze_count() > 1000  # the test process's own heap
    assert collectable(early) == [False]
    later = []  # made after it: a second freeze would take it out of the collector's walks too
    for _ in range(500):
        heap.note_request(True)
    assert collectable(later) == [True]


def test_no_freeze_when_turned_off(fresh):
    for _ in range(heap.FREEZE_AFTER_REQUESTS * 2):
        heap.note_request(False)
    assert gc.get_freeze_count() == 0
