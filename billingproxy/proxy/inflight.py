"""Requests admitted and not recorded yet, so a shutdown can record the ones it cuts.

SIGTERM gives in-flight requests the shutdown grace; uvicorn then cancels what still runs. A cut
stream records itself as it unwinds (``streaming``); a request still waiting for the provider has
no hook left to run, so at exit every request still here gets an ``interrupted`` row (prompt
tokens counted, no completion, estimated) and its reservation settled. One dict insert and one
delete per request; bounded, in case a request's record never comes (a lost logging callback).
The admission time is kept too: a request cut before the provider answered has no start time in
LiteLLM's logging object, and its row must not start when it was recorded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["admitted_at", "begin", "end", "pending", "record_interrupted"]

_MAX = 10_000  # far above one process's concurrent requests; bodies can be large
_pending: OrderedDict[str, tuple[Mapping[str, Any], Mapping[str, Any] | None, float]] = OrderedDict()


def begin(request_id: str, data: Mapping[str, Any], auth_meta: Mapping[str, Any] | None) -> None:
    _pending[request_id] = (data, auth_meta, time.time())
    if len(_pending) > _MAX:
        _pending.popitem(last=False)


def end(request_id: str) -> None:
    _pending.pop(request_id, None)


def admitted_at(request_id: str) -> float | None:
    """When a request still in flight was admitted (epoch seconds); None once recorded or unknown."""
    entry = _pending.get(request_id)
    return None if entry is None else entry[2]


def pending() -> int:
    return len(_pending)


def record_interrupted() -> int:
    """Record every request still in flight as ``interrupted``; returns how many."""
    from billingproxy.proxy.streaming import record_cut  # streaming imports the pipeline, which imports us

    count = 0
    for request_id, (data, auth_meta, _) in list(_pending.items()):
        if record_cut(data, auth_meta, status="interrupted"):  # still pending: its admission time counts
            count += 1
        _pending.pop(request_id, None)
    return count
