"""The one error tree. Every adapter translates it to its wire exactly once:

* LiteLLM (``callbacks/wire.py``): ``Refusal`` → an OpenAI-style ``ProxyException``;
* FastAPI (``billingproxy.service.errors``): every ``BillingProxyError`` → an OpenAI-style JSON body;
* the CLI (``billingproxy.cli``): every ``BillingProxyError`` → one line on stderr and an exit code.

Messages are ours (no provider text, no prompt), so they are safe to log and to show.
"""

from __future__ import annotations

__all__ = [
    "BillingProxyError",
    "ConfigError",
    "InvalidInput",
    "NotFound",
    "Refusal",
    "Unavailable",
]


class BillingProxyError(Exception):
    """Base of every error this package raises on purpose."""

    safe_to_log = True  # our own message (see billingproxy.proxy.log_redaction)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BillingProxyError):
    """A setting is missing or malformed, or the configuration (prices, meters, schema) is unusable."""


class InvalidInput(BillingProxyError, ValueError):
    """Bad operator input (CLI, admin API); the message says what to fix."""


class NotFound(BillingProxyError, LookupError):
    """The tenant, key or query asked for does not exist."""


class Unavailable(BillingProxyError):
    """A store (PostgreSQL, Redis) could not be reached; the caller may retry."""


_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


class Refusal(BillingProxyError):
    """A client request refused with an HTTP status and an OpenAI-style error code and type."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        type_: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details or {}  # extra fields of the error body (a budget refusal's "level")
        self.status = status
        self.code = code
        self.param = param  # the request field at fault (OpenAI's error.param), when there is one
        self.headers = headers or {}  # response headers the client needs (retry-after, x-should-retry)
        self.type = type_ or _TYPES.get(status, "service_unavailable" if status >= 500 else "invalid_request_error")
