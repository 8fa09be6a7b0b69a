"""Graceful shutdown for the proxy process: every queued usage row is written or spilled.

Cloud Run sends SIGTERM and allows ~10 s. Uvicorn handles SIGTERM gracefully (in-flight requests
finish) but then re-raises the signal with the default handler, which kills the process before
``atexit`` runs, so nothing queued in memory (LiteLLM's logging queue, our writer) would survive.
We chain uvicorn's handler, let it shut down gracefully, and drop the re-raise so the interpreter
exits normally; the exit hook then drains the logging queue and the writer with a fresh loop.

Cloud Run kills the process 10 s after SIGTERM, so uvicorn's wait for in-flight requests is bounded
by the grace (``BILLINGPROXY_SHUTDOWN_GRACE_S``, 8 s): a request still running then (a long stream,
a slow provider) is cancelled, and whatever it was is recorded (``interrupted``, estimated) by the
drains, which get what is left of ``grace + EXIT_MARGIN_S``. Hooks registered with ``on_signal``
run in the server's loop at SIGTERM (the budget manager hands its slices back there).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("billingproxy.shutdown")

_drains: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = {}
_on_signal: dict[str, Callable[[], Awaitable[None]]] = {}
_installed = False
_grace_s = 8.0
_signalled_at: float | None = None  # monotonic time of the first SIGTERM
_loop: asyncio.AbstractEventLoop | None = None
_tasks: set[asyncio.Task] = set()

# After the grace, the drains (logging queue, interrupted requests, the writer) share this margin:
# 8 s + 1.5 s leaves half a second of Cloud Run's 10 s for the interpreter's exit.
EXIT_MARGIN_S = 1.5


def on_exit(key: str, drain: Callable[[], Awaitable[None]], *, order: int = 100) -> None:
    """Run ``drain`` at exit, lowest ``order`` first; registering a key again replaces it."""
    _drains[key] = (order, drain)


def on_signal(key: str, hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``hook`` in the server's loop as soon as SIGTERM arrives (before requests finish)."""
    _on_signal[key] = hook
    global _loop
    with contextlib.suppress(RuntimeError):  # no loop yet: the hook runs only if a loop registers one
        _loop = asyncio.get_running_loop()


def stopping() -> bool:
    """True once SIGTERM arrived: a request cut from now on was interrupted, not cancelled."""
    return _signalled_at is not None


def time_left() -> float | None:
    """Seconds left for the drains (``grace + EXIT_MARGIN_S`` after SIGTERM), None without SIGTERM."""
    if _signalled_at is None:
        return None
    return _grace_s + EXIT_MARGIN_S - (time.monotonic() - _signalled_at)


def drain_timeout(default_s: float, floor_s: float = 0.5) -> float:
    """A drain's timeout: ``default_s``, cut to what is left of the exit budget after SIGTERM."""
    left = time_left()
    return default_s if left is None else min(default_s, max(left, floor_s))


def install(grace_s: float = 8.0) -> None:
    """Idempotent; call from the main thread at start. ``grace_s``: how long in-flight requests
    may take after SIGTERM before they are cut."""
    global _installed, _grace_s
    if _installed:
        return
    _installed = True
    _grace_s = grace_s
    atexit.register(_run_drains)
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _chain(previous))
    except ValueError:  # not the main thread (e.g. a test harness): atexit alone still works
        log.debug("SIGTERM handler not installed: not in the main thread")


def _chain(previous):
    def handle_sigterm(signum, frame) -> None:
        global _signalled_at
        if _signalled_at is None:
            _signalled_at = time.monotonic()
            _run_signal_hooks()
        if callable(previous):
            previous(signum, frame)  # uvicorn: stop accepting, finish in-flight requests
        server = getattr(previous, "__self__", None)
        config = getattr(server, "config", None)
        if config is not None and hasattr(config, "timeout_graceful_shutdown"):
            # Then uvicorn cancels what still runs; the cut requests are recorded as they unwind.
            # Half a second less than the grace: cancelling and recording them takes a moment.
            bound = max(_grace_s - 0.5, 0.1)
            current = config.timeout_graceful_shutdown
            config.timeout_graceful_shutdown = bound if current is None else min(current, bound)
        captured = getattr(server, "_captured_signals", None)
        if isinstance(captured, list) and signum in captured:
            captured.remove(signum)  # exit normally instead of dying by signal: atexit must run
        elif previous in (signal.SIG_DFL, None):
            raise SystemExit(0)

    return handle_sigterm


def _run_signal_hooks() -> None:
    loop = _loop
    if loop is None or loop.is_closed() or not _on_signal:
        return

    def start() -> None:
        for key, hook in list(_on_signal.items()):
            task = loop.create_task(_guarded(key, hook))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

    loop.call_soon_threadsafe(start)


async def _guarded(key: str, hook: Callable[[], Awaitable[None]]) -> None:
    try:
        await hook()
    except Exception:
        log.exception("SIGTERM hook %s failed", key)


def _run_drains() -> None:
    async def drain_all() -> None:
        # Re-read the table after each drain: a drain may register another (the writer starts,
        # and registers its own drain, when the first row is recorded at exit).
        done: set[str] = set()
        while True:
            pending = sorted((order, key) for key, (order, _) in _drains.items() if key not in done)
            if not pending:
                break
            key = pending[0][1]
            done.add(key)
            try:
                await _drains[key][1]()
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
