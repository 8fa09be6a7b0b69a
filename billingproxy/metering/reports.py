"""Usage reports: the billing SQL in db/queries/ (one parameterised file per question) and the
per-tenant usage report the CLI and the admin API both print.

The files are written for psql: ``psql "$DATABASE_URL" -v from=2026-11-01 -v to=2026-12-01 -f
db/queries/daily_cost_by_model.sql`` substitutes ``:'from'`` as a quoted literal. From Python,
``run(conn, name, **params)`` translates each psql variable (``:'name'`` or ``:name``) into a
driver parameter (``%(name)s``), so values are bound, never spliced into the text; string
literals, comments and ``::type`` casts are left as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import psycopg

from billingproxy.config import REPO_ROOT
from billingproxy.errors import InvalidInput, NotFound

__all__ = [
    "DIMENSIONS",
    "QUERIES_DIR",
    "AttributionReport",
    "UsageReport",
    "attribution_report",
    "fixed",
    "names",
    "plain",
    "run",
    "sql",
    "tenant_breakdown",
    "usage_report",
]


def fixed(amount: Decimal) -> str:
    """A decimal for JSON: its full scale, never an exponent (0E-10 is "0.0000000000")."""
    return format(amount, "f")


def plain(amount: Decimal) -> str:
    """A decimal as people write it: 0.0305, 0, 12.5 (never 0E-10 or 1.25E+1)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


QUERIES_DIR = REPO_ROOT / "db" / "queries"

# Left to right: a quoted psql variable, a bare one, then things to leave alone: a string
# literal, a comment, a cast (`::date`), any other colon.
_TOKENS = re.compile(
    r""":'(?P<quoted>[A-Za-z_]\w*)'|(?<!:):(?P<bare>[A-Za-z_]\w*)|'(?:[^']|'')*'|--[^\n]*|::|%""",
)


def names() -> list[str]:
    return sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))


def source(name: str) -> str:
    """The file's text, as psql runs it."""
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise NotFound(f"no query named {name!r}; known: {', '.join(names())}")
    return path.read_text()


def translate(text: str) -> tuple[str, frozenset[str]]:
    """psql variables → psycopg ``%(name)s`` placeholders; returns (sql, the variable names)."""
    used: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        variable = match["quoted"] or match["bare"]
        if variable:
            used.add(variable)
            return f"%({variable})s"
        piece = match[0]
        return piece.replace("%", "%%")

    return _TOKENS.sub(replace, text), frozenset(used)


@cache
def _translated(name: str) -> tuple[str, frozenset[str]]:
    return translate(source(name))


def sql(name: str) -> str:
    """The query as the driver runs it (psql variables turned into parameters)."""
    return _translated(name)[0]


def variables(name: str) -> frozenset[str]:
    """The psql variables (= keyword parameters) the query needs."""
    return _translated(name)[1]


def run(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as dicts (the connection must use dict_row, as billingproxy.db.connect does)."""
    text, needed = _translated(name)
    missing = needed - params.keys()
    if missing:
        raise InvalidInput(f"query {name!r} needs {', '.join(sorted(missing))}")
    return conn.execute(text, {key: params[key] for key in needed}).fetchall()


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


# Reports below the tenant: the dimension → its db/queries/ file (read from the daily rollup).
DIMENSIONS = {"end_user": "usage_by_end_user", "tag": "usage_by_tag", "key": "usage_by_key"}


@dataclass(frozen=True)
class AttributionReport:
    """One tenant's usage per end user, tag or key over whole UTC days [start, end)."""

    tenant_id: str
    by: str
    start: date
    end: date
    rows: list[dict[str, Any]]

    @property
    def total_cost_usd(self) -> Decimal:
        """The sum over the rows; by tag a request with two tags counts twice."""
        return sum((row["cost_usd"] for row in self.rows), start=Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "by": self.by,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "rows": [{k: fixed(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in self.rows],
            "total_cost_usd": fixed(self.total_cost_usd),
        }


def attribution_report(conn: psycopg.Connection, tenant_id: str, by: str, start: date, end: date) -> AttributionReport:
    """``by`` is ``end_user``, ``tag`` or ``key``; days are UTC, ``end`` exclusive."""
    if by not in DIMENSIONS:
        raise InvalidInput(f"unknown report dimension {by!r}; known: {', '.join(DIMENSIONS)}, model")
    if end <= start:
        raise InvalidInput("the end of a report must be after its start")
    rows = run(conn, DIMENSIONS[by], tenant_id=tenant_id, **{"from": start, "to": end})
    return AttributionReport(tenant_id, by, start, end, rows)
