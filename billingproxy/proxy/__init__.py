"""The facade ``callbacks/`` calls: start-up, authentication, admission and the post-call pipeline.

Everything LiteLLM-facing goes through here, so the adapters in ``callbacks/`` stay thin and
import only this package and ``billingproxy.errors``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from billingproxy import logs, shutdown
from billingproxy.access import (
    KeyRecord,
    Principal,
    TokenCountLimiter,
    auth_metadata,
    check_tenant_route,
    check_token_count,
    limiter_identity,
    tenant_limiter_identity,
)
from billingproxy.access import limits_from_auth as _limits_from_auth
from billingproxy.access.attribution import attach_attribution
from billingproxy.config import AuthSettings, WriterSettings
from billingproxy.metering import admitted, tokenizer
from billingproxy.proxy import answered, heap, inflight, log_redaction, runtime
from billingproxy.proxy.admission import admit as _admit
from billingproxy.proxy.contract import check_body_read, response_headers
from billingproxy.proxy.pipeline import record_usage
from billingproxy.proxy.streaming import metered_stream, record_disconnected

__all__ = [
    "KeyRecord",
    "Principal",
    "admit_request",
    "admit_token_count",
    "auth_metadata",
    "authenticate",
    "counts_tokens",
    "drain_timeout",
    "limiter_identity",
    "max_body_bytes",
    "metered_stream",
    "on_exit",
    "record_answer",
    "record_disconnected",
    "record_logged",
    "record_usage",
    "response_headers",
    "start",
    "tenant_limiter_identity",
    "warm_tokenizer",
]

_started = False
_log = logging.getLogger("billingproxy.shutdown")


def start() -> None:
    """Once per process, when LiteLLM loads our callbacks: settings and prices are validated (a bad
    value stops the proxy with a ``ConfigError`` naming it) and our log handling is installed."""
    global _started
    if _started:
        return
    runtime.settings()
    runtime.prices()
    runtime.price_book()
    runtime.catalog()
    AuthSettings.from_env()
    WriterSettings.from_env()
    logs.configure()  # our operational lines are JSON on stdout, like the request lines
    log_redaction.install()  # LiteLLM's error lines must not carry provider text quoting prompts
    # At start, not when the writer first starts: a request in flight at the first SIGTERM of a
    # fresh process must still have its row drained (the writer registers its drain later).
    shutdown.install(runtime.settings().shutdown_grace_s)
    shutdown.on_exit("interrupted-requests", _record_interrupted, order=5)
    _started = True


async def _record_interrupted() -> None:
    """At exit: requests still in flight (cut by the shutdown grace) get their row."""
    count = inflight.record_interrupted()
    if count:
        _log.warning("recorded %d request(s) cut by the shutdown as interrupted", count)


async def authenticate(token: str | None, route: str) -> Principal:
    """The caller behind a token, allowed on ``route``; raises ``Refusal`` otherwise."""
    principal = await runtime.authenticator().authenticate(token)
    heap.note_request(runtime.settings().gc_freeze)
    if not principal.is_admin:
        check_tenant_route(route)
    return principal


_token_counts = TokenCountLimiter()


def counts_tokens(route: str) -> bool:
    """Anthropic's token counting: LiteLLM runs no pre-call hook for it (see ``admit_token_count``)."""
    return route.endswith("/messages/count_tokens")


def admit_token_count(principal: Principal, body: Mapping[str, Any]) -> None:
    """A count_tokens call of a tenant: its model allow-list and RPM, checked at authentication."""
    if principal.record is not None and not principal.is_admin:
        check_token_count(principal.record, body, _token_counts)


def max_body_bytes() -> int:
    return runtime.settings().max_body_bytes


async def admit_request(
    auth_meta: Mapping[str, Any] | None,
    models: Iterable[str] | None,
    request_id: str,
    call_type: str,
    body: dict[str, Any],
) -> None:
    """Admission for a request our auth let in (a no-op for the master key); raises ``Refusal``."""
    limits = _limits_from_auth(auth_meta, models)
    if limits is not None:
        check_body_read(body, (body.get("proxy_server_request") or {}).get("headers"))
        attribution = attach_attribution(body)  # first: a malformed end user or tag is a 400, never billed
        await _admit(
            limits,
            request_id,
            call_type,
            body,
            runtime.price_book().for_tenant(limits.tenant_id),
            runtime.budgets(),
            runtime.settings(),
            runtime.catalog(),
            end_user=attribution.end_user,
            end_user_budgets=runtime.authenticator().end_user_budgets(limits.tenant_id),
        )
        inflight.begin(request_id, body, auth_meta)
        if runtime.settings().request_log:
            # Before the upstream call: a crash from here on still leaves a trace to bill (usage audit).
            model = str(body.get("model"))
            admitted.emit(request_id, auth_meta or {}, model, call_type, body, None, runtime.instance_id())


def warm_tokenizer() -> None:
    """Load the tokenizer that counts cut requests now (call off the start path, once the
    adapter has pointed tiktoken at LiteLLM's bundled files): loading it on the first
    cancellation would delay that request's settlement by ~1 s. A failed earlier load is retried."""
    tokenizer.encoder.cache_clear()
    tokenizer.encoder()
    runtime.catalog().load_tokenizers()  # the budget reservations' exact prompt counts


def drain_timeout(default_s: float) -> float:
    """A drain's timeout after SIGTERM: ``default_s`` or what is left of the exit budget."""
    return shutdown.drain_timeout(default_s)


def on_exit(name: str, drain: Callable[[], Awaitable[None]], order: int) -> None:
    """Run ``drain`` at process exit (SIGTERM included), in ``order`` with our own drains."""
    shutdown.on_exit(name, drain, order=order)


def record_answer(data: dict[str, Any], auth_meta: Mapping[str, Any] | None, response: Any) -> None:
    """A non-streaming answer, recorded before LiteLLM returns it (post-call success hook)."""
    call_type = getattr(data.get("litellm_logging_obj"), "call_type", None)
    raw_usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
    usage = answered.usage_dict(raw_usage, call_type)
    if not usage:
        return  # nothing metered here (e.g. an image or audio response): the logging callback records it
    hidden = getattr(response, "_hidden_params", None)
    payload = answered.payload_of_response(
        data,
        auth_meta,
        usage=usage,
        hidden=hidden if isinstance(hidden, dict) else None,
        stream=False,
        end_time=time.time(),
    )
    answered.record_answered(payload)


def record_logged(payload: dict[str, Any], **outcome: Any) -> None:
    """LiteLLM's logging callback: records what was not recorded before the response, once."""
    answered.record_logged(payload, **outcome)
