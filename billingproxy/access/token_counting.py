"""Admission for Anthropic's ``/v1/messages/count_tokens``, which LiteLLM answers without a model
call and without its pre-call hooks (so neither our admission nor LiteLLM's rate limiter sees it).

Checked at authentication instead: the model must be on the tenant's allow-list, and calls are
limited per minute at the key's and the tenant's RPM (and the key's per-model RPM), each counted
apart from inference (a client that counts before every message must not lose half its RPM), in
this process (like LiteLLM's limiter without Redis). Never billed: no upstream call is made.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from billingproxy.access.auth import KeyRecord
from billingproxy.access.identity import limiter_identity, tenant_limiter_identity
from billingproxy.errors import Refusal

__all__ = ["TokenCountLimiter", "check_token_count"]

WINDOW_S = 60


class TokenCountLimiter:
    """Fixed one-minute windows per identity; old windows are dropped as the minute turns."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    def admit(self, limits: Iterable[tuple[str, int | None]]) -> None:
        """Count one call against every (identity, RPM) with a limit, or refuse with none counted."""
        now = self.clock()
        window = int(now // WINDOW_S)
        if window != self._window:
            self._window, self._counts = window, {}
        limited = [(identity, rpm) for identity, rpm in limits if rpm is not None]
        for identity, rpm in limited:
            if self._counts.get(identity, 0) >= rpm:
                retry_after = max(int((window + 1) * WINDOW_S - now) + 1, 1)
                raise Refusal(
                    429,
                    "rate_limit_exceeded",
                    f"Token counting is limited to {rpm} requests per minute ({identity.split(':')[0]}).",
                    "rate_limit_error",
                    headers={"retry-after": str(retry_after)},
                )
        for identity, _ in limited:
            self._counts[identity] = self._counts.get(identity, 0) + 1


def check_token_count(record: KeyRecord, body: Mapping[str, Any], limiter: TokenCountLimiter) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return  # LiteLLM's handler answers that (an Anthropic-shaped 400)
    if record.allowed_models and model not in record.allowed_models:
        raise Refusal(403, "model_not_allowed", f"Model '{model}' is not allowed for this tenant.", "permission_error")
    # The identities LiteLLM's own limiter counts inference on; these counters are separate.
    limits = [(tenant_limiter_identity(record), record.rpm_limit)]
    if record.key_id is not None:
        key = limiter_identity(record)
        limits.append((key, record.key_rpm_limit))
        limits += [(f"{key}:{m}", rpm) for m, rpm, _ in record.key_model_limits if m == model]
    limiter.admit(limits)
