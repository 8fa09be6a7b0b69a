"""Which proxy routes a tenant token may call: the metered inference routes and the model list.

LiteLLM's own management routes (keys, spend, health checks, debug, config) and the stateful
provider APIs (files, batches, assistants) act on the shared provider account or the whole proxy,
so one tenant could read another's data or spend our money unmetered. They need the master key.
"""

from __future__ import annotations

import re

from billingproxy.errors import Refusal

__all__ = ["TENANT_ROUTES", "check_tenant_route", "tenant_may_call"]

# messages/count_tokens: Anthropic's token counting (anthropic's messages.count_tokens); LiteLLM
# answers it without a model call or a usage record, so it is authenticated and never billed.
_PATHS = ("chat/completions", "completions", "embeddings", "responses", "messages", "messages/count_tokens", "models")
TENANT_ROUTES = frozenset(f"{prefix}/{path}" for prefix in ("", "/v1") for path in _PATHS)
# Azure-style deployment paths and a single model lookup (`client.models.retrieve`).
_TENANT_PATTERNS = re.compile(
    r"/(?:openai/deployments|engines)/[^/]+/(?:chat/completions|completions|embeddings)|(?:/v1)?/models/[^/]+"
)


def tenant_may_call(route: str) -> bool:
    return route in TENANT_ROUTES or _TENANT_PATTERNS.fullmatch(route) is not None


def check_tenant_route(route: str) -> None:
    if not tenant_may_call(route):
        raise Refusal(403, "route_not_allowed", f"Route {route} needs the admin key; gateway tokens call the API.")
