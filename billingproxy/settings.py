"""Runtime settings, read from the environment once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


def database_url() -> str:
    """BILLINGPROXY_DATABASE_URL, else DATABASE_URL.

    The proxy process must use the first: LiteLLM treats a DATABASE_URL as its own Prisma
    database and refuses to start without the prisma CLI.
    """
    url = os.environ.get("BILLINGPROXY_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def public_url() -> str:
    """The billing service's address as tenants reach it (portal links): BILLINGPROXY_PUBLIC_URL."""
    return os.environ.get("BILLINGPROXY_PUBLIC_URL") or "http://127.0.0.1:4001"


def master_key() -> str | None:
    """The admin key: PROXY_MASTER_KEY, falling back to LITELLM_MASTER_KEY."""
    return os.environ.get("PROXY_MASTER_KEY") or os.environ.get("LITELLM_MASTER_KEY") or None


@dataclass(frozen=True)
class AuthSettings:
    cache_ttl_s: float = 10.0
    negative_ttl_s: float = 5.0
    cache_size: int = 10_000
    gateway_token: str | None = None
    gateway_tenant: str | None = None

    @classmethod
    def from_env(cls) -> AuthSettings:
        ttl = _float("BILLINGPROXY_AUTH_CACHE_TTL", 10.0)
        if not 0 <= ttl <= 30:
            raise ConfigError("BILLINGPROXY_AUTH_CACHE_TTL must be between 0 and 30 seconds")
        return cls(
            cache_ttl_s=ttl,
            negative_ttl_s=min(ttl, _float("BILLINGPROXY_AUTH_NEGATIVE_TTL", 5.0)),
            cache_size=_int("BILLINGPROXY_AUTH_CACHE_SIZE", 10_000),
            gateway_token=os.environ.get("PROXY_GATEWAY_TOKEN") or None,
            gateway_tenant=os.environ.get("PROXY_GATEWAY_TENANT") or None,
        )


@dataclass(frozen=True)
class WriterSettings:
    batch_size: int = 500  # a batch this size is written at once, else every flush_interval
    max_batch: int = 20_000  # when rows are backlogged (after an outage), catch up in bigger batches
    flush_interval_s: float = 0.2
    queue_bound: int = 50_000
    spill_dir: Path = field(default_factory=lambda: Path(".data/spill"))
    shutdown_deadline_s: float = 8.0

    @classmethod
    def from_env(cls) -> WriterSettings:
        return cls(
            batch_size=_int("BILLINGPROXY_WRITER_BATCH", 500),
            max_batch=_int("BILLINGPROXY_WRITER_MAX_BATCH", 20_000),
            flush_interval_s=_float("BILLINGPROXY_WRITER_INTERVAL_MS", 200) / 1000,
            queue_bound=_int("BILLINGPROXY_WRITER_QUEUE", 50_000),
            spill_dir=Path(os.environ.get("BILLINGPROXY_SPILL_DIR", ".data/spill")),
            shutdown_deadline_s=_float("BILLINGPROXY_SHUTDOWN_DEADLINE_S", 8.0),
        )


def config_path() -> Path:
    """The proxy's config.yaml, which also holds the pinned price table."""
    return Path(os.environ.get("BILLINGPROXY_CONFIG", REPO_ROOT / "config.yaml"))


def _flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw.lower() in ("1", "true", "yes", "on")


def billing_window_s() -> int:
    """Usage accrues per tenant and window of this many seconds (the proxies and relay agree)."""
    window = _int("BILLINGPROXY_BILLING_WINDOW_S", 60)
    if not 1 <= window <= 3600 or 3600 % window:
        raise ConfigError("BILLINGPROXY_BILLING_WINDOW_S must divide an hour (1 … 3600 seconds)")
    return window


@dataclass(frozen=True)
class Meter:
    """One billing meter: the event name it posts and what it measures."""

    event_name: str
    measure: str  # "cost_microusd" (billed amount * price multiplier) | "input_tokens" | "output_tokens"


MEASURES = ("cost_microusd", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class BillingSettings:
    window_s: int = 60  # usage is aggregated per tenant and window into one entry per meter
    grace_s: float = 30.0  # a window is sealed this long after it closes (in-flight batches land)
    meters: tuple[Meter, ...] = (Meter("llm_cost_microusd", "cost_microusd"),)
    sink: str = "stripe"  # stripe | lago | webhook
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None  # only for tests and egress proxies
    stripe_timeout_s: float = 20.0
    webhook_secret: str | None = None  # Stripe's endpoint secret (whsec_…)
    webhook_tolerance_s: int = 300
    suspend_on_payment_failure: bool = False
    lago_api_url: str | None = None
    lago_api_key: str | None = None
    sink_webhook_url: str | None = None
    sink_webhook_secret: str | None = None
    relay_concurrency: int = 8  # customers posted in parallel (one call at a time per customer)
    relay_tries: int = 4  # in-process tries per entry before it is deferred to a later pass
    relay_backoff_s: float = 0.5  # base of the jittered exponential backoff
    reconcile_after_s: float = 23 * 3600  # an entry tried but unconfirmed this long is reconciled

    @classmethod
    def from_env(cls) -> BillingSettings:
        meters = []
        for variable, measure, default in (
            ("BILLINGPROXY_COST_METER", "cost_microusd", "llm_cost_microusd"),
            ("BILLINGPROXY_INPUT_TOKENS_METER", "input_tokens", ""),
            ("BILLINGPROXY_OUTPUT_TOKENS_METER", "output_tokens", ""),
        ):
            name = os.environ.get(variable, default)
            if name and name.lower() != "none":
                meters.append(Meter(name, measure))
        if not meters:
            raise ConfigError("no billing meter configured (BILLINGPROXY_COST_METER is 'none')")
        window = billing_window_s()
        sink = os.environ.get("BILLINGPROXY_BILLING_SINK", "stripe")
        if sink not in ("stripe", "lago", "webhook"):
            raise ConfigError("BILLINGPROXY_BILLING_SINK must be stripe, lago or webhook")
        return cls(
            window_s=window,
            grace_s=_float("BILLINGPROXY_BILLING_GRACE_S", 30.0),
            meters=tuple(meters),
            sink=sink,
            stripe_api_key=os.environ.get("STRIPE_API_KEY") or None,
            stripe_api_base=os.environ.get("STRIPE_API_BASE") or None,
            stripe_timeout_s=_float("STRIPE_TIMEOUT_S", 20.0),
            webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
            webhook_tolerance_s=_int("STRIPE_WEBHOOK_TOLERANCE_S", 300),
            suspend_on_payment_failure=_flag("BILLINGPROXY_SUSPEND_ON_PAYMENT_FAILURE"),
            lago_api_url=os.environ.get("LAGO_API_URL") or None,
            lago_api_key=os.environ.get("LAGO_API_KEY") or None,
            sink_webhook_url=os.environ.get("BILLINGPROXY_SINK_WEBHOOK_URL") or None,
            sink_webhook_secret=os.environ.get("BILLINGPROXY_SINK_WEBHOOK_SECRET") or None,
            relay_concurrency=max(1, _int("BILLINGPROXY_RELAY_CONCURRENCY", 8)),
            relay_tries=max(1, _int("BILLINGPROXY_RELAY_TRIES", 4)),
            relay_backoff_s=_float("BILLINGPROXY_RELAY_BACKOFF_S", 0.5),
            reconcile_after_s=_float("BILLINGPROXY_RECONCILE_AFTER_S", 23 * 3600),
        )
