"""Keep provider error text out of LiteLLM's own log lines.

Providers quote the request in some errors ("... for input: <prompt>"), and LiteLLM logs the
exception text, traceback and chained causes at ERROR. Prompt text must never reach the logs,
so on LiteLLM's loggers every exception, in the arguments, formatted into the message, or in
``exc_info``, is replaced by its type, status and provider. Tracebacks keep their frames, which
is what debugging needs; our own request line already carries the status and error type.
Our own refusals (messages we wrote) set ``safe_to_log = True`` and keep their text, logged at
WARNING rather than LiteLLM's ERROR. Every LiteLLM line gets ``severity`` for Cloud Logging.
LiteLLM's start-up warnings about features BillingProxy does not use are logged at INFO, with
the reason, so the first thing an operator sees is not three alarms that do not apply.
"""

from __future__ import annotations

import logging
import sys

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router")


# (a start of LiteLLM's warning, why it does not apply to BillingProxy)
NOT_APPLICABLE = (
    (
        "custom_auth is configured but 'custom_auth_run_common_checks' is not set",
        "BillingProxy checks budgets, model lists and rate limits in its own hooks; LiteLLM's DB "
        "team/project records are not used",
    ),
    (
        "trusted_proxy_ranges is not set",
        "this is about LiteLLM's own Admin UI sign-in (/ui), which BillingProxy does not use",
    ),
    (
        "Running ",  # "Running N workers but Redis is not configured. Failed Admin UI sign-in …"
        "this is about LiteLLM's own Admin UI sign-in (/ui), which BillingProxy does not use",
    ),
    (
        "register_model: model=",  # "… has custom pricing but not in built-in cost map …"
        "BillingProxy prices every request from its own price table, not LiteLLM's cost map",
    ),
)


def _not_applicable(record: logging.LogRecord) -> str | None:
    if record.levelno != logging.WARNING or not isinstance(record.msg, str):
        return None
    for start, reason in NOT_APPLICABLE:
        if record.msg.startswith(start) and ("Admin UI" in record.msg or not start.startswith("Running")):
            return reason
    return None


class RedactedError(Exception):
    """Stands in for the logged exception: same traceback frames, no message text."""


def summary(exc: BaseException) -> str:
    details = [
        f"{name}={value}"
        for name in ("status_code", "code", "type", "llm_provider", "model")
        if isinstance(value := getattr(exc, name, None), (str, int)) and value != "" and len(str(value)) <= 64
    ]
    return f"{type(exc).__name__}({', '.join(details)}) [message withheld: may quote the request]"


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (their texts can appear in messages)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _client_refusal(exc: BaseException) -> bool:
    """One of our own refusals of a client request (4xx): the client's mistake, not our error."""
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return getattr(exc, "safe_to_log", False) and str(status).isdigit() and 400 <= int(status) < 500


class ExceptionTextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        attached = record.exc_info[1] if record.exc_info else None
        # LiteLLM often formats the exception into an f-string inside its ``except`` block.
        candidates = [*args, attached, sys.exc_info()[1]]
        found = [exc for exc in candidates if isinstance(exc, BaseException)]
        if found and record.levelno >= logging.ERROR and all(_client_refusal(exc) for exc in found):
            # LiteLLM logs every refused request at ERROR; a tenant over budget is not an incident.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if reason := _not_applicable(record):
            record.msg = f"{record.getMessage()} [BillingProxy: not applicable: {reason}]"
            record.args, record.levelno, record.levelname = None, logging.INFO, "INFO"
        # With JSON_LOGS=True LiteLLM's JSON line carries a record's extra attributes: ``severity`` is
        # the field Cloud Logging reads (its own ``level`` is not), so errors are filed as ERROR.
        record.severity = record.levelname
        exceptions = [exc for exc in found if not getattr(exc, "safe_to_log", False)]
        if not exceptions:
            return True
        message = record.getMessage()
        for exc in exceptions:
            for cause in chain(exc):
                for text in (repr(cause), str(cause)):
                    if text:
                        message = message.replace(text, summary(cause))
        record.msg, record.args = message, None
        if attached is not None:
            record.exc_info = (RedactedError, RedactedError(summary(attached)), record.exc_info[2])
            record.exc_text = None
        return True


def install() -> None:
    """Idempotent: one filter per LiteLLM logger."""
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExceptionTextFilter) for f in logger.filters):
            logger.addFilter(ExceptionTextFilter())
