"""Portal links: read-only links to one tenant's usage and bill.

The token (``bpp_`` + 32 random bytes, URL-safe) is shown once; only its SHA-256 is stored, like
gateway keys. A link expires (30 days by default) and can be revoked; both make it answer 410.
This module writes only the console's own table, ``portal_links``.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from billingproxy.errors import InvalidInput, NotFound
from billingproxy.tenants import TenantStore
from billingproxy.tokens import hash_token, new_id

PORTAL_TOKEN_PREFIX = "bpp_"  # noqa: S105 - a public prefix, not a secret
DEFAULT_DAYS = 30.0
MAX_DAYS = 366.0
_COLUMNS = "id, tenant_id, created_at, expires_at, revoked_at, created_by"


@dataclass(frozen=True)
class PortalLink:
    id: str
    tenant_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    created_by: str

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        return {**data, "state": self.state()}


class LinkGone(LookupError):
    """The link existed but is expired or revoked (410)."""


def portal_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/portal/{token}"


class PortalLinks:
    """Operations on ``portal_links`` over one psycopg connection (dict rows)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def create(
        self, tenant_ref: str, *, expires_in_days: float = DEFAULT_DAYS, created_by: str = "operator"
    ) -> tuple[PortalLink, str]:
        if not 0 < expires_in_days <= MAX_DAYS:
            raise InvalidInput(f"a portal link lasts more than 0 and at most {MAX_DAYS:.0f} days")
        tenant = TenantStore(self.conn).get_tenant(tenant_ref)
        token = PORTAL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = self.conn.execute(
            f"""INSERT INTO portal_links (id, tenant_id, token_hash, expires_at, created_by)
                VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",  # noqa: S608 - constant column list
            (
                new_id("pl"),
                tenant.id,
                hash_token(token),
                datetime.now(UTC) + timedelta(days=expires_in_days),
                created_by,
            ),
        ).fetchone()
        self.conn.commit()
        return PortalLink(**row), token

    def list(self, tenant_ref: str | None = None) -> list[PortalLink]:
        if tenant_ref is None:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM portal_links ORDER BY created_at, id").fetchall()  # noqa: S608
        else:
            tenant = TenantStore(self.conn).get_tenant(tenant_ref)
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM portal_links WHERE tenant_id = %s ORDER BY created_at, id",  # noqa: S608
                (tenant.id,),
            ).fetchall()
        self.conn.commit()
        return [PortalLink(**row) for row in rows]

    def revoke(self, link_id: str) -> PortalLink:
        row = self.conn.execute(
            f"""UPDATE portal_links SET revoked_at = coalesce(revoked_at, now())
                WHERE id = %s RETURNING {_COLUMNS}""",  # noqa: S608
            (link_id,),
        ).fetchone()
        if row is None:
            self.conn.rollback()
            raise NotFound(f"no portal link with id {link_id!r}")
        self.conn.commit()
        return PortalLink(**row)

    def resolve(self, token: str) -> PortalLink:
        """The active link for a token; NotFound for an unknown token, LinkGone when expired/revoked."""
        if not token.startswith(PORTAL_TOKEN_PREFIX) or len(token) > 100:
            raise NotFound("no such portal link")
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM portal_links WHERE token_hash = %s",  # noqa: S608
            (hash_token(token),),
        ).fetchone()
        self.conn.commit()
        if row is None:
            raise NotFound("no such portal link")
        link = PortalLink(**row)
        if link.state() != "active":
            raise LinkGone(f"this portal link is {link.state()}")
        return link
