"""``doctor``: what is wrong with this installation, and how to fix it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import click
import psycopg
import stripe

from billingproxy import db
from billingproxy.billing import StripeApi, stripe_client
from billingproxy.cli.output import emit, json_option
from billingproxy.config import (
    AuthSettings,
    BillingSettings,
    DevStackSettings,
    ProxySettings,
    WriterSettings,
    database_url,
    master_key,
)
from billingproxy.errors import BillingProxyError
from billingproxy.metering import PriceTable
from billingproxy.prices import PriceStore, config_models, price_listing
from billingproxy.proxy.catalog import ModelCatalog

__all__ = ["command"]

MIN_MASTER_KEY = 32


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, object]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _settings() -> list[Finding]:
    found = []
    for name, read in (
        ("proxy settings", ProxySettings.from_env),
        ("auth settings", AuthSettings.from_env),
        ("writer settings", WriterSettings.from_env),
        ("billing settings", BillingSettings.from_env),
    ):
        try:
            read()
            found.append(Finding(name, True, "valid"))
        except BillingProxyError as exc:
            found.append(Finding(name, False, exc.message, "correct the variable (README, Configuration)"))
    return found


def _prices() -> list[Finding]:
    try:
        table = PriceTable.from_config()
    except BillingProxyError as exc:
        return [Finding("prices", False, exc.message, "give every model pinned prices in config.yaml model_info")]
    return [Finding("prices", True, f"{len(table.models())} models priced")]


def _database() -> list[Finding]:
    try:
        url = database_url()
        with db.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()["server_version"]
            applied = db.applied_versions(conn)
    except BillingProxyError as exc:
        return [Finding("database", False, exc.message, "set DATABASE_URL (or run `make run`)")]
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [Finding("database", False, f"unreachable: {first}", "start PostgreSQL or fix DATABASE_URL")]
    found = [Finding("database", True, f"reachable (PostgreSQL {version})")]
    migrations = db.discover()
    pending = [m.path.name for m in migrations if m.version not in applied]
    edited = [m.path.name for m in migrations if m.version in applied and applied[m.version] != m.checksum]
    if edited:
        found.append(Finding("migrations", False, f"edited after being applied: {', '.join(edited)}", "restore them"))
    elif pending:
        found.append(
            Finding(
                "migrations",
                False,
                f"{len(pending)} pending: {', '.join(pending)}",
                "python -m billingproxy db migrate",
            )
        )
    else:
        found.append(Finding("migrations", True, f"all {len(migrations)} applied"))
    return found


def _price_book() -> list[Finding]:
    """Every model config.yaml serves has a price version in force now: one without is refused for
    tenant tokens (503 ``model_not_priced``), so it is a failure, one line per model."""
    models = config_models()
    at = datetime.now(UTC)
    try:
        with db.connect(database_url()) as conn:
            store = PriceStore(conn)
            listing = price_listing(store, models, at)
            upcoming = {v.model: v.effective_from for v in reversed(store.versions()) if v.effective_from > at}
    except psycopg.errors.UndefinedTable:
        return [Finding("price book", False, "not migrated", "python -m billingproxy db migrate")]
    except (BillingProxyError, psycopg.Error):
        return []  # the database check above says why
    unpriced = [r["model"] for r in listing if r["status"] == "unpriced" and r["model"] in models]
    found = []
    for model in unpriced:
        detail = "no price version in force: requests are refused (503 model_not_priced)"
        if model in upcoming:
            detail += f"; the first one takes effect {upcoming[model].isoformat()}"
        fix = f"python -m billingproxy prices set {model} --input-per-mtok N --output-per-mtok N --effective-at NOW"
        found.append(Finding(f"price {model}", False, detail, fix + " (or db migrate, for config.yaml's prices)"))
    if not found:
        found.append(Finding("price book", True, f"all {len(models)} configured models priced"))
    return found


def _master_key() -> list[Finding]:
    key = master_key()
    if not key:
        return [
            Finding("master key", False, "PROXY_MASTER_KEY is not set", "set it to a random string of 32+ characters")
        ]
    if len(key) < MIN_MASTER_KEY:
        return [Finding("master key", False, f"only {len(key)} characters", f"use {MIN_MASTER_KEY}+ random characters")]
    return [Finding("master key", True, "set")]


def _providers() -> list[Finding]:
    try:
        catalog = ModelCatalog.from_config()
    except BillingProxyError as exc:
        return [Finding("models", False, exc.message, "check BILLINGPROXY_CONFIG / config.yaml")]
    found = []
    for entry in catalog.entries:
        missing = entry.missing
        if missing:
            found.append(
                Finding(f"model {entry.name}", False, f"unset: {', '.join(missing)}", "set the provider credentials")
            )
        else:
            found.append(
                Finding(f"model {entry.name}", True, "credentials set" if entry.variables else "no credentials needed")
            )
    return found


def _stripe() -> list[Finding]:
    settings = BillingSettings.from_env()
    if settings.sink != "stripe":
        return [Finding("stripe", True, f"not used (sink {settings.sink})")]
    if not settings.stripe_api_key:
        return [Finding("stripe", False, "STRIPE_API_KEY is not set", "set it (Secret Manager in production)")]
    api = StripeApi(stripe_client(settings))
    found = []
    for meter in settings.meters:
        try:
            api.meter_id(meter.event_name)
            found.append(Finding(f"stripe meter {meter.event_name}", True, "exists"))
        except BillingProxyError as exc:
            found.append(Finding(f"stripe meter {meter.event_name}", False, exc.message, "create the meter in Stripe"))
        except (stripe.StripeError, OSError) as exc:  # a finding, not a traceback
            found.append(Finding("stripe", False, f"{type(exc).__name__}: {exc}", "check STRIPE_API_KEY and egress"))
            break
    return found


def _ports() -> list[Finding]:
    settings = DevStackSettings.from_env()
    found = []
    for what, port in (("proxy", settings.port), ("billing service", settings.service_port)):
        with socket.socket() as probe:
            busy = probe.connect_ex(("127.0.0.1", port)) == 0
        detail = f"{port} in use (a running {what}, or another program)" if busy else f"{port} free"
        found.append(Finding(f"port {what}", True, detail))  # informative: a running stack uses them
    return found


CHECKS: list[Callable[[], list[Finding]]] = [
    _settings,
    _prices,
    _database,
    _price_book,
    _master_key,
    _providers,
    _stripe,
    _ports,
]


@click.command("doctor")
@json_option
def command(as_json: bool) -> None:
    """Check the database, migrations, the price book, master key, provider credentials, Stripe and ports."""
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(check())
        except BillingProxyError as exc:
            findings.append(Finding(check.__name__.strip("_"), False, exc.message))

    def human() -> None:
        for finding in findings:
            line = f"{'ok  ' if finding.ok else 'FAIL'}  {finding.check:28} {finding.detail}"
            click.echo(line + (f"  → {finding.fix}" if finding.fix and not finding.ok else ""))

    emit([f.to_json() for f in findings], as_json, human)
    if not all(f.ok for f in findings):
        raise SystemExit(1)
