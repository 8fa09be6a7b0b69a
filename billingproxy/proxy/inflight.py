"""Requests admitted and not recorded yet, so a shutdown can record the ones it cuts.

SIGTERM gives in-flight requests the shutdown grace; uvicorn then cancels what still runs. A cut
stream records itself as it unwinds (``streaming``); a request still waiting for the provider has
no hook left to run, so at exit every request still here gets an ``interrupted`` row (prompt
tokens counted, no completion, estimated) and its reservation settled. One dict insert and one
delete per request; bounded, in case a request's record never comes (a lost logging callback).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["begin", "end", "pending", "record_interrupted"]

_MAX = 10_000  # far above one process's concurrent requests; bodies can be large
_pending: OrderedDict[str, tuple[Mapping[str, Any], Mapping[str, Any] | None]] = OrderedDict()


def begin(request_id: str, data: Mapping[str, Any], auth_meta: Mapping[str, Any] | None) -> None:
    _pending[request_id] = (data, auth_meta)
    if len(_pending) > _MAX:
        _pending.popitem(last=False)


def end(request_id: str) -> None:
    _pending.pop(request_id, None)


def pending() -> int:
    return len(_pending)


def record_interrupted() -> int:
    """Record every request still in flight as ``interrupted``; returns how many."""
    from billingproxy.proxy.streaming import record_cut  # streaming imports the pipeline, which imports us

    count = 0
    for request_id, (data, auth_meta) in list(_pending.items()):
        _pending.pop(request_id, None)
        if record_cut(data, auth_meta, status="interrupted"):
            count += 1
    return count
