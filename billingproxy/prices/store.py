"""Price versions and rate cards in PostgreSQL. The only module that writes ``price_versions``,
``rate_cards`` and ``rerate_runs``; versions are only ever inserted (history is never rewritten)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from billingproxy.config import config_path
from billingproxy.errors import InvalidInput, NotFound
from billingproxy.metering.pricing import PriceError, to_decimal
from billingproxy.prices.model import DIMENSIONS, MTOK, PriceVersion, RateCard, parse_price
from billingproxy.tenants import TenantStore
from billingproxy.tenants.model import parse_multiplier

__all__ = [
    "FIRST_EFFECTIVE",
    "PriceStore",
    "config_models",
    "config_versions",
    "import_config_prices",
    "parse_instant",
    "price_listing",
]

# The first imported version applies to all history (replays of old rows are priced by it).
FIRST_EFFECTIVE = datetime(1970, 1, 1, tzinfo=UTC)
_VERSION_COLUMNS = """id, model, effective_from, input_per_mtok, output_per_mtok, cached_read_per_mtok,
    cache_write_5m_per_mtok, cache_write_1h_per_mtok, reasoning_per_mtok, long_context_threshold,
    long_input_per_mtok, long_output_per_mtok, input_audio_per_mtok, output_audio_per_mtok, input_image_per_mtok,
    mode, source, created_by, reason"""
_INSERT_VERSION = (
    """INSERT INTO price_versions (model, effective_from, input_per_mtok, output_per_mtok,
    cached_read_per_mtok, cache_write_5m_per_mtok, cache_write_1h_per_mtok, reasoning_per_mtok,
    long_context_threshold, long_input_per_mtok, long_output_per_mtok, input_audio_per_mtok,
    output_audio_per_mtok, input_image_per_mtok, mode, source, created_by, reason)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    RETURNING """
    + _VERSION_COLUMNS
)
_CARD_COLUMNS = """id, tenant_id, model, multiplier, input_per_mtok, output_per_mtok, cached_read_per_mtok,
    cache_write_5m_per_mtok, cache_write_1h_per_mtok, input_audio_per_mtok, output_audio_per_mtok,
    input_image_per_mtok, valid_from, valid_until, created_by, reason"""
_LONG_TIER = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")
CACHE_WRITE_5M_FACTOR = Decimal("1.25")  # Anthropic: 5-minute cache writes cost 1.25x input
CACHE_WRITE_1H_FACTOR = Decimal(2)  # and 1-hour cache writes 2x input


def _per_mtok(info: dict[str, Any], key: str, name: str) -> Decimal | None:
    if info.get(key) is None:
        return None
    return (to_decimal(info[key], f"{name} {key}") * MTOK).normalize()


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default.normalize() if value is None else value


def _config(path: Path | None) -> dict[str, Any]:
    path = path or config_path()
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise PriceError(f"config file not found: {path}") from exc


def config_models(path: Path | None = None) -> list[str]:
    """Every model name config.yaml serves (priced or not)."""
    return sorted({str(e["model_name"]) for e in _config(path).get("model_list") or [] if e.get("model_name")})


def config_versions(path: Path | None = None) -> list[PriceVersion]:
    """config.yaml's ``model_info`` prices (USD per token, LiteLLM's names) as unsaved versions."""
    config = _config(path)
    versions = []
    for entry in config.get("model_list") or []:
        name = entry.get("model_name")
        info = entry.get("model_info") or {}
        if not name or info.get("input_cost_per_token") is None:
            continue  # unpriced: refused at admission, shown by `prices list`
        price_in = _per_mtok(info, "input_cost_per_token", name) or Decimal(0)
        threshold = long_in = long_out = None
        for key in info:
            match = _LONG_TIER.match(key)
            if match:
                threshold = int(match[1]) * 1000
                long_in = _per_mtok(info, key, name)
                long_out = _per_mtok(info, f"output_cost_per_token_above_{match[1]}k_tokens", name)
        versions.append(
            PriceVersion(
                id=None,
                model=name,
                effective_from=FIRST_EFFECTIVE,
                input=price_in,
                output=_per_mtok(info, "output_cost_per_token", name) or Decimal(0),
                cached_read=_or(_per_mtok(info, "cache_read_input_token_cost", name), price_in),
                cache_write_5m=_or(
                    _per_mtok(info, "cache_creation_input_token_cost", name), price_in * CACHE_WRITE_5M_FACTOR
                ),
                cache_write_1h=_or(
                    _per_mtok(info, "cache_creation_input_token_cost_above_1hr", name), price_in * CACHE_WRITE_1H_FACTOR
                ),
                reasoning=_per_mtok(info, "output_cost_per_reasoning_token", name),
                long_context_threshold=threshold,
                long_input=long_in,
                long_output=long_out if threshold is None or long_out is not None else None,
                # LiteLLM's model_prices keys; absent: billed as plain input / output tokens.
                input_audio=_per_mtok(info, "input_cost_per_audio_token", name),
                output_audio=_per_mtok(info, "output_cost_per_audio_token", name),
                input_image=_per_mtok(info, "input_cost_per_image_token", name),
                mode=str(info.get("mode") or "chat"),
                source="config",
                created_by="db migrate",
                reason="config.yaml model_info",
            )
        )
    return versions


def import_config_prices(conn: psycopg.Connection, path: Path | None = None) -> list[PriceVersion]:
    """Each config price that differs from the last version imported from config becomes a new
    version (effective now; the first one for a model from 1970). Operator-set versions are left
    alone. Returns the versions added."""
    store = PriceStore(conn)
    added = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('billingproxy_price_import'))")
        for version in config_versions(path):
            last = conn.execute(
                f"""SELECT {_VERSION_COLUMNS} FROM price_versions WHERE model = %s AND source = 'config'
                    ORDER BY effective_from DESC LIMIT 1""",
                (version.model,),
            ).fetchone()
            if last is not None and PriceVersion.from_row(last).same_prices(version):
                continue
            any_version = conn.execute("SELECT 1 FROM price_versions WHERE model = %s", (version.model,)).fetchone()
            effective = FIRST_EFFECTIVE if any_version is None else datetime.now(UTC)
            added.append(store.insert_version(version, effective))
    return added


class PriceStore:
    """Synchronous reads and writes over one psycopg connection (dict rows)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # ---- versions --------------------------------------------------------------------------

    def versions(self, model: str | None = None) -> list[PriceVersion]:
        where, params = ("WHERE model = %s", (model,)) if model else ("", ())
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_VERSION_COLUMNS} FROM price_versions {where} ORDER BY model, effective_from",
                params,
            ).fetchall()
        return [PriceVersion.from_row(r) for r in rows]

    def version(self, version_id: int) -> PriceVersion:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(f"SELECT {_VERSION_COLUMNS} FROM price_versions WHERE id = %s", (version_id,)).fetchone()
        if row is None:
            raise NotFound(f"no price version {version_id}")
        return PriceVersion.from_row(row)

    def insert_version(self, version: PriceVersion, effective_from: datetime) -> PriceVersion:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                _INSERT_VERSION,
                (
                    version.model,
                    effective_from,
                    version.input,
                    version.output,
                    version.cached_read,
                    version.cache_write_5m,
                    version.cache_write_1h,
                    version.reasoning,
                    version.long_context_threshold,
                    version.long_input,
                    version.long_output,
                    version.input_audio,
                    version.output_audio,
                    version.input_image,
                    version.mode,
                    version.source,
                    version.created_by,
                    version.reason,
                ),
            ).fetchone()
        return PriceVersion.from_row(row)

    def set_price(
        self,
        model: str,
        *,
        input_per_mtok: Any,
        output_per_mtok: Any,
        effective_at: datetime,
        cached_read_per_mtok: Any = None,
        cache_write_per_mtok: Any = None,
        cache_write_1h_per_mtok: Any = None,
        reasoning_per_mtok: Any = None,
        long_context_threshold: int | None = None,
        long_input_per_mtok: Any = None,
        long_output_per_mtok: Any = None,
        input_audio_per_mtok: Any = None,
        output_audio_per_mtok: Any = None,
        input_image_per_mtok: Any = None,
        mode: str | None = None,
        source: str = "cli",
        created_by: str = "cli",
        reason: str | None = None,
    ) -> PriceVersion:
        """A new version from ``effective_at`` on (unset cache prices: the provider defaults; unset
        audio / image prices: billed as plain input / output)."""
        model = (model or "").strip()
        if not model or len(model) > 200:
            raise InvalidInput("model must be a non-empty name of at most 200 characters")
        if effective_at.tzinfo is None:
            raise InvalidInput("effective time must carry a time zone (e.g. 2026-12-01T12:00:00Z)")
        price_in = parse_price(input_per_mtok, "input price")
        price_out = parse_price(output_per_mtok, "output price")
        tier = (long_context_threshold, long_input_per_mtok, long_output_per_mtok)
        if any(v is not None for v in tier) and not all(v is not None for v in tier):
            raise InvalidInput("a long-context tier needs its threshold, input price and output price")
        if long_context_threshold is not None and not 1 <= long_context_threshold <= 2**31 - 1:
            raise InvalidInput("long-context threshold must be a positive number of prompt tokens")
        if reason is not None and len(reason) > 500:
            raise InvalidInput("reason must be at most 500 characters")

        def opt(value: Any, what: str) -> Decimal | None:
            return None if value is None else parse_price(value, what)

        previous = [v for v in self.versions(model) if v.effective_from <= effective_at]
        version = PriceVersion(
            id=None,
            model=model,
            effective_from=effective_at,
            input=price_in,
            output=price_out,
            cached_read=_or(opt(cached_read_per_mtok, "cached read price"), price_in),
            cache_write_5m=_or(opt(cache_write_per_mtok, "cache write price"), price_in * CACHE_WRITE_5M_FACTOR),
            cache_write_1h=_or(
                opt(cache_write_1h_per_mtok, "1-hour cache write price"), price_in * CACHE_WRITE_1H_FACTOR
            ),
            reasoning=opt(reasoning_per_mtok, "reasoning price"),
            long_context_threshold=long_context_threshold,
            long_input=opt(long_input_per_mtok, "long-context input price"),
            long_output=opt(long_output_per_mtok, "long-context output price"),
            input_audio=opt(input_audio_per_mtok, "input audio price"),
            output_audio=opt(output_audio_per_mtok, "output audio price"),
            input_image=opt(input_image_per_mtok, "input image price"),
            mode=mode or (previous[-1].mode if previous else "chat"),
            source=source,
            created_by=created_by,
            reason=reason,
        )
        try:
            with self.conn.transaction():
                return self.insert_version(version, effective_at)
        except psycopg.errors.UniqueViolation:
            raise InvalidInput(f"{model} already has a price version effective at {effective_at.isoformat()}") from None

    # ---- rate cards ------------------------------------------------------------------------

    def rate_cards(self, tenant_id: str | None = None) -> list[RateCard]:
        where, params = ("WHERE tenant_id = %s", (tenant_id,)) if tenant_id else ("", ())
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_CARD_COLUMNS} FROM rate_cards {where} ORDER BY tenant_id, valid_from, id",
                params,
            ).fetchall()
        return [RateCard.from_row(r) for r in rows]

    def set_rate_card(
        self,
        tenant_ref: str,
        model: str | None,
        *,
        valid_from: datetime,
        valid_until: datetime | None = None,
        multiplier: Any = None,
        fixed: dict[str, Any] | None = None,
        created_by: str = "cli",
        reason: str | None = None,
    ) -> RateCard:
        tenant = TenantStore(self.conn).get_tenant(tenant_ref)
        fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
        unknown = set(fixed) - set(DIMENSIONS)
        if unknown:
            raise InvalidInput(f"unknown price dimension(s): {', '.join(sorted(unknown))}")
        if (multiplier is None) == (not fixed):
            raise InvalidInput("a rate card takes either a multiplier or fixed prices, not both and not neither")
        for t in (valid_from, valid_until):
            if t is not None and t.tzinfo is None:
                raise InvalidInput("times must carry a time zone (e.g. 2026-12-01T00:00:00Z)")
        if valid_until is not None and valid_until <= valid_from:
            raise InvalidInput("--until must be after --from")
        mult = parse_multiplier(multiplier) if multiplier is not None else None
        prices = {d: parse_price(v, f"{d.replace('_', ' ')} price") for d, v in fixed.items()}
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"""INSERT INTO rate_cards (tenant_id, model, multiplier, input_per_mtok, output_per_mtok,
                        cached_read_per_mtok, cache_write_5m_per_mtok, cache_write_1h_per_mtok,
                        input_audio_per_mtok, output_audio_per_mtok, input_image_per_mtok,
                        valid_from, valid_until, created_by, reason)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CARD_COLUMNS}""",
                (
                    tenant.id,
                    model or None,
                    mult,
                    *(prices.get(d) for d in DIMENSIONS),
                    valid_from,
                    valid_until,
                    created_by,
                    reason,
                ),
            ).fetchone()
        return RateCard.from_row(row)

    # ---- re-rating audit -------------------------------------------------------------------

    def record_rerate(
        self, tenant_id: str, period_from: datetime, period_to: datetime, rows: int, difference: Decimal, by: str
    ) -> int:
        row = self.conn.execute(
            """INSERT INTO rerate_runs (tenant_id, period_from, period_to, rows_changed, difference_usd, created_by)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (tenant_id, period_from, period_to, rows, difference, by),
        ).fetchone()
        return row["id"] if isinstance(row, dict) else row[0]


def parse_instant(value: Any, what: str) -> datetime:
    """An ISO-8601 instant from an operator; without a zone it is UTC (as everywhere in the CLI)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value or "").strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what} must be an ISO-8601 time such as 2026-12-01T12:00:00Z, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def price_listing(store: PriceStore, models: list[str], at: datetime, model: str | None = None) -> list[dict[str, Any]]:
    """Each model's version in force at ``at``; a configured model without one is ``unpriced``."""
    by_model: dict[str, PriceVersion] = {}
    for version in store.versions(model):
        if version.effective_from <= at:
            by_model[version.model] = version  # versions come in effective order: the last one wins
    names = sorted({*by_model, *(m for m in models if model is None or m == model)})
    rows = []
    for name in names:
        version = by_model.get(name)
        status = "priced" if version else "unpriced"
        rows.append({"model": name, "status": status, **(version.to_json() if version else {})})
    return rows
