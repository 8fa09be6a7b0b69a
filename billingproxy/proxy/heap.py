"""Keep LiteLLM's start-up heap out of the garbage collector's full passes.

The proxy imports a very large object graph at start (LiteLLM, its providers, the model cost
map): ~810,000 tracked objects (813,556 in a bench run). Every full (generation 2) collection
walks all of it and stops the event loop for 0.3 to 0.5 s on one core (measured with
``gc.callbacks`` under ``bench.compare``: stock and ours alike, a few times a minute under load),
which every request in flight waits out. Those pauses are the proxy's p99.

``gc.freeze()`` moves every object tracked so far into a permanent generation that collections
skip. Done once, after the first requests (LiteLLM imports provider code lazily on first use),
the graph is frozen while it is still the start-up graph; cycles made later are collected as
before. The cost is that garbage existing at that moment is never reclaimed: a one-off, bounded
amount (the cycles of the requests in flight). ``BILLINGPROXY_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["FREEZE_AFTER_REQUESTS", "note_request"]

FREEZE_AFTER_REQUESTS = 100  # by then the first calls have imported what LiteLLM loads lazily

_log = logging.getLogger("billingproxy.heap")
_seen = 0


def note_request(enabled: bool) -> None:
    """Called once per authenticated request: freezes the heap at the configured request."""
    global _seen
    if _seen > FREEZE_AFTER_REQUESTS:
        return
    _seen += 1
    if _seen == FREEZE_AFTER_REQUESTS and enabled:
        gc.freeze()
        _log.info("start-up heap frozen: %d objects out of the collector's full passes", gc.get_freeze_count())
