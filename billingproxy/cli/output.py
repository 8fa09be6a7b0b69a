"""How every command prints: ``--json`` for machines, tables and lines for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click

from billingproxy import db
from billingproxy.metering.reports import plain
from billingproxy.tenants import TenantStore

__all__ = ["emit", "json_option", "show_fields", "table", "tenant_store", "utc"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


def show_fields(data: dict[str, Any], as_json: bool) -> None:
    emit(data, as_json, lambda: [click.echo(f"{k:20} {v}") for k, v in data.items()])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return plain(value) if isinstance(value, Decimal) else str(value)


def table(rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    rows = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns))


@contextmanager
def tenant_store() -> Iterator[TenantStore]:
    """A TenantStore on a fresh connection (DATABASE_URL)."""
    with db.connect() as conn:
        yield TenantStore(conn)


def utc(value: datetime | None) -> datetime | None:
    """click.DateTime gives naive datetimes: the CLI's times are UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
