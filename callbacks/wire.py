"""Our errors on LiteLLM's wire: the one translation of ``billingproxy.errors.Refusal``.

LiteLLM's own ProxyException puts the HTTP status in ``code``; the status still comes from it, and
the body carries our error code (``invalid_api_key``, ``budget_exceeded``…), OpenAI style.
"""

from __future__ import annotations

from litellm.proxy._types import ProxyException

from billingproxy.errors import Refusal


class GatewayRefusal(ProxyException):
    """A ProxyException whose body carries our error code."""

    safe_to_log = True  # our own message: no provider text, no prompt (see log_redaction)

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            message=refusal.message,
            type=refusal.type,
            param=refusal.param,
            headers=refusal.headers or None,
            code=refusal.status,
            openai_code=refusal.code,
        )
        self.details = refusal.details

    def to_dict(self) -> dict:
        return {**super().to_dict(), "code": self.openai_code, **self.details}
