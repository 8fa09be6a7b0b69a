"""Gateway tokens: generated once, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "sk-bp-"  # noqa: S105 - a public prefix, not a secret
TOKEN_RANDOM_BYTES = 32
DISPLAY_PREFIX_LEN = len(TOKEN_PREFIX) + 6


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(token: str) -> str:
    """Enough of the token to recognise it in a listing, far too little to use it."""
    return token[:DISPLAY_PREFIX_LEN]


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def new_id(kind: str) -> str:
    """Stripe-style readable ids: ``tn_…`` for tenants, ``key_…`` for keys."""
    return f"{kind}_{secrets.token_hex(8)}"
