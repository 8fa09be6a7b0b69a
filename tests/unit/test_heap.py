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


def test_the_heap_is_frozen_at_the_configured_request_and_not_before(fresh):
    for _ in range(heap.FREEZE_AFTER_REQUESTS - 1):
        heap.note_request(True)
    assert gc.get_freeze_count() == 0
    heap.note_request(True)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the test process's own heap
    keep = [[] for _ in range(10)]  # tracked objects made later: a second freeze would take them
    for _ in range(500):
        heap.note_request(True)
    assert gc.get_freeze_count() == frozen and keep


def test_no_freeze_when_turned_off(fresh):
    for _ in range(heap.FREEZE_AFTER_REQUESTS * 2):
        heap.note_request(False)
    assert gc.get_freeze_count() == 0
