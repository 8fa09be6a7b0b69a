"""Attribution below the tenant: the tenant's own customer (end user), the request's tags and the
id the client gave the request.

Read once, at admission, from the request LiteLLM hands the pre-call hook:

* ``end_user``: the ``X-BillingProxy-End-User`` header, else OpenAI's ``user`` field, else
  Anthropic's ``metadata.user_id``;
* ``tags``: the ``X-BillingProxy-Tags: a,b`` header, else ``metadata.tags`` (a list of strings);
* ``client_request_id``: a client-sent ``x-request-id`` header.

Every value is bounded and validated (length, count, charset): a bad one is refused with a 400
naming the field (``Refusal.param``), never cut silently, so nothing is billed for it and a
report never shows a truncated name. The validated values travel to the logging payload inside
our auth metadata (``user_api_key_auth_metadata``, which LiteLLM copies there), so the usage
record reads them back with ``attribution_of_auth_metadata``. No prompt text is ever read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billingproxy.errors import Refusal

__all__ = [
    "END_USER_HEADER",
    "MAX_CLIENT_REQUEST_ID",
    "MAX_END_USER",
    "MAX_TAG",
    "MAX_TAGS",
    "TAGS_HEADER",
    "Attribution",
    "attach_attribution",
    "attribution_of_auth_metadata",
    "attribution_of_request",
    "request_auth_metadata",
]

END_USER_HEADER = "x-billingproxy-end-user"
TAGS_HEADER = "x-billingproxy-tags"
REQUEST_ID_HEADER = "x-request-id"

MAX_END_USER = 128
MAX_TAG = 64
MAX_TAGS = 16
MAX_CLIENT_REQUEST_ID = 128

# Ids, e-mail addresses, URNs and UUIDs fit; whitespace, quotes, control characters and
# non-ASCII do not (they would make reports and CSV exports ambiguous).
_NAME = re.compile(r"[A-Za-z0-9_.:@+/=~|#-]+")
# x-request-id: any visible ASCII (SDKs send UUIDs, some prefix them).
_REQUEST_ID = re.compile(r"[\x21-\x7e]+")

_KEY = "attribution"  # where the values ride in our auth metadata


@dataclass(frozen=True, slots=True)
class Attribution:
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    client_request_id: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        """JSON-safe, for LiteLLM's metadata dicts."""
        return {"end_user": self.end_user, "tags": list(self.tags), "client_request_id": self.client_request_id}


NONE = Attribution()


def _bad(param: str, message: str) -> Refusal:
    return Refusal(400, "invalid_attribution", f"'{param}' {message}", "invalid_request_error", param=param)


def _name(value: Any, param: str, limit: int) -> str:
    if not isinstance(value, str):
        raise _bad(param, "must be a string.")
    if not value:
        raise _bad(param, "must not be empty.")
    if len(value) > limit:
        raise _bad(param, f"must be at most {limit} characters, got {len(value)}.")
    if not _NAME.fullmatch(value):
        raise _bad(param, "may contain only letters, digits and _ . : @ + / = ~ | # -.")  # never echo it
    return value


def _tags(values: Any, param: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise _bad(param, "must be a list of strings.")
    if len(values) > MAX_TAGS:
        raise _bad(param, f"must have at most {MAX_TAGS} tags, got {len(values)}.")
    tags = [_name(value, param, MAX_TAG) for value in values]
    return tuple(dict.fromkeys(tags))  # a repeated tag counts once


def _lower(headers: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def attribution_of_request(
    body: Mapping[str, Any], headers: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None = None
) -> Attribution:
    """The request's attribution, validated; raises ``Refusal`` (400, ``param`` set) on a bad value.

    ``metadata`` is the client's own metadata object (the body's ``metadata`` when not given).
    """
    headers = _lower(headers)
    if metadata is None:
        metadata = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else None
    metadata = metadata or {}
    end_user: str | None = None
    if END_USER_HEADER in headers:
        end_user = _name(headers[END_USER_HEADER].strip(), "X-BillingProxy-End-User", MAX_END_USER)
    elif body.get("user") is not None:
        end_user = _name(body["user"], "user", MAX_END_USER)
    elif metadata.get("user_id") is not None:
        end_user = _name(metadata["user_id"], "metadata.user_id", MAX_END_USER)
    tags: tuple[str, ...] = ()
    if TAGS_HEADER in headers:
        raw = [part.strip() for part in headers[TAGS_HEADER].split(",")]
        tags = _tags([part for part in raw if part], "X-BillingProxy-Tags")
    elif metadata.get("tags") is not None:
        tags = _tags(metadata["tags"], "metadata.tags")
    client_request_id = headers.get(REQUEST_ID_HEADER)
    if client_request_id is not None:
        if len(client_request_id) > MAX_CLIENT_REQUEST_ID:
            raise _bad("x-request-id", f"must be at most {MAX_CLIENT_REQUEST_ID} characters.")
        if not _REQUEST_ID.fullmatch(client_request_id):
            raise _bad("x-request-id", "may contain only visible ASCII characters.")
    if end_user is None and not tags and client_request_id is None:
        return NONE
    return Attribution(end_user, tags, client_request_id)


# LiteLLM's request data: our auth metadata and the client's metadata sit in "metadata" on most
# routes and in "litellm_metadata" on others (/v1/messages, /v1/responses…); the client's own
# metadata object is snapshotted as "requester_metadata", its headers as "headers".
_METADATA_FIELDS = ("metadata", "litellm_metadata")
_AUTH = "user_api_key_auth_metadata"


def _litellm_metadata(data: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in _METADATA_FIELDS:
        value = data.get(name)
        if isinstance(value, dict) and _AUTH in value:
            return value
    return None


def attach_attribution(data: dict[str, Any]) -> Attribution:
    """Validate the attribution of LiteLLM's request ``data`` and store it in our auth metadata
    (where the logging payload carries it to the usage record); raises ``Refusal``."""
    litellm_metadata = _litellm_metadata(data)
    headers = None
    requester = None
    if litellm_metadata is not None:
        headers = litellm_metadata.get("headers")
        requester = litellm_metadata.get("requester_metadata")
    if headers is None:
        headers = (data.get("proxy_server_request") or {}).get("headers")
    if not isinstance(requester, Mapping):
        requester = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else None
    attribution = attribution_of_request(data, headers, requester)
    if litellm_metadata is not None and attribution is not NONE:
        # A new dict: LiteLLM's copy may be shared with the auth cache's template.
        litellm_metadata[_AUTH] = {**(litellm_metadata[_AUTH] or {}), _KEY: attribution.to_metadata()}
    return attribution


def request_auth_metadata(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Our auth metadata as this request carries it (with the attribution ``attach_attribution``
    stored): what a record made before the logging payload exists must read."""
    litellm_metadata = _litellm_metadata(data)
    return litellm_metadata.get(_AUTH) if litellm_metadata is not None else None


def attribution_of_auth_metadata(auth_meta: Mapping[str, Any] | None) -> Attribution:
    """The attribution ``attach_attribution`` stored, read back from a logging payload's auth
    metadata; values are re-checked (a forged or damaged payload yields none, never an error)."""
    stored = (auth_meta or {}).get(_KEY)
    if not isinstance(stored, Mapping):
        return NONE
    try:
        headers = {}
        if stored.get("client_request_id") is not None:
            headers[REQUEST_ID_HEADER] = stored["client_request_id"]
        return attribution_of_request(
            {"user": stored.get("end_user")}, headers, {"tags": list(stored.get("tags") or []) or None}
        )
    except Refusal:
        return NONE
