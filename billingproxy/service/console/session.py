"""Operator sessions and CSRF tokens for the console.

A session is a cookie ``bp_console`` = ``payload.signature``: the payload is base64url JSON
``{"exp": unix seconds, "csrf": random hex, "sid": random hex}`` and the signature an
HMAC-SHA256 over it with a key derived from the master key. So rotating the master key ends
every session, a changed payload fails the signature, and an expired one is refused. The
cookie is HttpOnly, SameSite=Strict, Path=/console and Secure when served over HTTPS.

Every form carries the session's CSRF token; a POST without the matching token gets 403. The
login form itself uses a double-submit token (a random cookie that the form field must match).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "bp_console"
LOGIN_COOKIE = "bp_console_login"
DEFAULT_TTL_S = 8 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str
    expires: int


class SessionSigner:
    def __init__(self, master_key: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._key = hmac.new(master_key.encode(), b"billingproxy-console-session-v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        session = Session(secrets.token_hex(16), secrets.token_hex(32), int((now or time.time()) + self.ttl_s))
        payload = _b64(json.dumps({"sid": session.sid, "csrf": session.csrf, "exp": session.expires}).encode())
        return session, f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1000:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["sid"]), str(data["csrf"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (now or time.time()):
            return None
        return session


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
