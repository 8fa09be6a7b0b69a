"""Usage reports: the billing SQL in db/queries/ (one parameterised file per question) and the
per-tenant usage report the CLI and the admin API both print."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from billingproxy.config import REPO_ROOT
from billingproxy.errors import InvalidInput, NotFound

__all__ = ["QUERIES_DIR", "UsageReport", "fixed", "names", "plain", "run", "sql", "tenant_breakdown", "usage_report"]


def fixed(amount: Decimal) -> str:
    """A decimal for JSON: its full scale, never an exponent (0E-10 is "0.0000000000")."""
    return format(amount, "f")


def plain(amount: Decimal) -> str:
    """A decimal as people write it: 0.0305, 0, 12.5 (never 0E-10 or 1.25E+1)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


QUERIES_DIR = REPO_ROOT / "db" / "queries"


def names() -> list[str]:
    return sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))


def sql(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise NotFound(f"no query named {name!r}; known: {', '.join(names())}")
    return path.read_text()


def run(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as dicts (the connection must use dict_row, as billingproxy.db.connect does)."""
    return conn.execute(sql(name), params).fetchall()


def tenant_breakdown(conn: psycopg.Connection, tenant_id: str, start: datetime, end: datetime) -> list[dict]:
    return run(conn, "tenant_model_breakdown", tenant_id=tenant_id, **{"from": start, "to": end})


@dataclass(frozen=True)
class UsageReport:
    """One tenant's usage per model over [start, end)."""

    tenant_id: str
    start: datetime
    end: datetime
    models: list[dict[str, Any]]

    @property
    def total_cost_usd(self) -> Decimal:
        return sum((row["cost_usd"] for row in self.models), start=Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "models": [{k: fixed(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in self.models],
            "total_cost_usd": fixed(self.total_cost_usd),
        }


def usage_report(conn: psycopg.Connection, tenant_id: str, start: datetime, end: datetime) -> UsageReport:
    if end <= start:
        raise InvalidInput("the end of a report must be after its start")
    return UsageReport(tenant_id, start, end, tenant_breakdown(conn, tenant_id, start, end))
