"""Graceful shutdown for the proxy process: every queued usage row is written or spilled.

Cloud Run sends SIGTERM and allows ~10 s. Uvicorn handles SIGTERM gracefully (in-flight requests
finish) but then re-raises the signal with the default handler, which kills the process before
``atexit`` runs, so nothing queued in memory (LiteLLM's logging queue, our writer) would survive.
We chain uvicorn's handler, let it shut down gracefully, and drop the re-raise so the interpreter
exits normally; the exit hook then drains the logging queue and the writer with a fresh loop.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("billingproxy.shutdown")

_drains: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = {}
_installed = False


def on_exit(key: str, drain: Callable[[], Awaitable[None]], *, order: int = 100) -> None:
    """Run ``drain`` at exit, lowest ``order`` first; registering a key again replaces it."""
    _drains[key] = (order, drain)


def install() -> None:
    """Idempotent; call from the main thread once the server is running (inside its loop)."""
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(_run_drains)
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _chain(previous))
    except ValueError:  # not the main thread (e.g. a test harness): atexit alone still works
        log.debug("SIGTERM handler not installed: not in the main thread")


def _chain(previous):
    def handle_sigterm(signum, frame) -> None:
        if callable(previous):
            previous(signum, frame)  # uvicorn: stop accepting, finish in-flight requests
        server = getattr(previous, "__self__", None)
        captured = getattr(server, "_captured_signals", None)
        if isinstance(captured, list) and signum in captured:
            captured.remove(signum)  # exit normally instead of dying by signal: atexit must run
        elif previous in (signal.SIG_DFL, None):
            raise SystemExit(0)

    return handle_sigterm


def _run_drains() -> None:
    async def drain_all() -> None:
        for _, drain in sorted(_drains.values(), key=lambda item: item[0]):
            try:
                await drain()
            except Exception:  # one failing drain must not stop the next
                log.exception("shutdown drain failed")

    if _drains:
        asyncio.run(drain_all())
    # Nothing is left to save. The interpreter's final garbage collection walks LiteLLM's whole
    # object graph (~3 s on one vCPU, measured): freezing skips it, so the process exits within
    # Cloud Run's 10 s grace instead of spending a third of it on memory the kernel frees anyway.
    gc.freeze()


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: loops (the relay) finish their pass and return."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
