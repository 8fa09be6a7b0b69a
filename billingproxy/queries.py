"""The billing SQL in db/queries/, one parameterised file per question."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from billingproxy.settings import REPO_ROOT

QUERIES_DIR = REPO_ROOT / "db" / "queries"


def names() -> list[str]:
    return sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))


def sql(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"no query named {name!r}; known: {', '.join(names())}")
    return path.read_text()


def run(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as dicts (the connection must use dict_row, as billingproxy.db.connect does)."""
    return conn.execute(sql(name), params).fetchall()


def tenant_breakdown(conn: psycopg.Connection, tenant_id: str, start: datetime, end: datetime) -> list[dict]:
    return run(conn, "tenant_model_breakdown", tenant_id=tenant_id, **{"from": start, "to": end})
