"""Every setting BillingProxy reads from the environment, and the only module that reads it.

Each variable is read through ``_raw`` (or a typed wrapper) so that a malformed value is a
``ConfigError`` naming the variable, never a bare ``ValueError``; every name passed to them is in
the README's configuration table (``tests/unit/test_architecture.py`` compares the two).
Settings are read when asked for, not at import: a process reads them once at start (the proxy's
``runtime``, the CLI's commands), tests may change them between calls.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from billingproxy.errors import ConfigError

__all__ = [
    "REPO_ROOT",
    "AuthSettings",
    "BillingSettings",
    "ConfigError",
    "DevStackSettings",
    "Meter",
    "ProxySettings",
    "WriterSettings",
    "billing_window_s",
    "cloud_logging_target",
    "config_path",
    "database_url",
    "environment",
    "is_set",
    "master_key",
    "public_url",
    "service_port",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _raw(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _float(name: str, default: float) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


def environment() -> dict[str, str]:
    """A copy of the whole environment, for the child processes ``make run`` starts."""
    return dict(os.environ)


def database_url() -> str:
    """BILLINGPROXY_DATABASE_URL, else DATABASE_URL.

    The proxy process must use the first: LiteLLM treats a DATABASE_URL as its own Prisma
    database and refuses to start without the prisma CLI.
    """
    url = _raw("BILLINGPROXY_DATABASE_URL") or _raw("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def master_key() -> str | None:
    """The admin key: PROXY_MASTER_KEY, falling back to LITELLM_MASTER_KEY."""
    return _raw("PROXY_MASTER_KEY") or _raw("LITELLM_MASTER_KEY")


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
            gateway_token=_raw("PROXY_GATEWAY_TOKEN"),
            gateway_tenant=_raw("PROXY_GATEWAY_TENANT"),
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
            spill_dir=Path(_raw("BILLINGPROXY_SPILL_DIR") or ".data/spill"),
            shutdown_deadline_s=_float("BILLINGPROXY_SHUTDOWN_DEADLINE_S", 8.0),
        )


def config_path() -> Path:
    """The proxy's config.yaml, which also holds the pinned price table."""
    return Path(_raw("BILLINGPROXY_CONFIG") or REPO_ROOT / "config.yaml")


def _flag(name: str, default: bool = False) -> bool:
    raw = _raw(name)
    return default if raw is None else raw.lower() in ("1", "true", "yes", "on")


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
    event_destination_secret: str | None = None  # an event destination's own secret (thin events)
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
            name = os.environ.get(variable, default)  # set but empty turns a meter off
            if name and name.lower() != "none":
                meters.append(Meter(name, measure))
        if not meters:
            raise ConfigError("no billing meter configured (BILLINGPROXY_COST_METER is 'none')")
        window = billing_window_s()
        sink = _raw("BILLINGPROXY_BILLING_SINK") or "stripe"
        if sink not in ("stripe", "lago", "webhook"):
            raise ConfigError("BILLINGPROXY_BILLING_SINK must be stripe, lago or webhook")
        return cls(
            window_s=window,
            grace_s=_float("BILLINGPROXY_BILLING_GRACE_S", 30.0),
            meters=tuple(meters),
            sink=sink,
            stripe_api_key=_raw("STRIPE_API_KEY"),
            stripe_api_base=_raw("STRIPE_API_BASE"),
            stripe_timeout_s=_float("STRIPE_TIMEOUT_S", 20.0),
            webhook_secret=_raw("STRIPE_WEBHOOK_SECRET"),
            event_destination_secret=_raw("STRIPE_EVENT_DESTINATION_SECRET"),
            webhook_tolerance_s=_int("STRIPE_WEBHOOK_TOLERANCE_S", 300),
            suspend_on_payment_failure=_flag("BILLINGPROXY_SUSPEND_ON_PAYMENT_FAILURE"),
            lago_api_url=_raw("LAGO_API_URL"),
            lago_api_key=_raw("LAGO_API_KEY"),
            sink_webhook_url=_raw("BILLINGPROXY_SINK_WEBHOOK_URL"),
            sink_webhook_secret=_raw("BILLINGPROXY_SINK_WEBHOOK_SECRET"),
            relay_concurrency=max(1, _int("BILLINGPROXY_RELAY_CONCURRENCY", 8)),
            relay_tries=max(1, _int("BILLINGPROXY_RELAY_TRIES", 4)),
            relay_backoff_s=_float("BILLINGPROXY_RELAY_BACKOFF_S", 0.5),
            reconcile_after_s=_float("BILLINGPROXY_RECONCILE_AFTER_S", 23 * 3600),
        )


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy's plugins read once per process (``billingproxy.proxy.runtime``)."""

    default_max_tokens: int = 4096  # output limit written where neither the request nor config.yaml sets one
    max_output_tokens: int = 1_000_000  # max_tokens & co. outside 1 … this are refused
    max_body_bytes: int = 8 * 1024 * 1024
    write_usage: bool = True  # off only for benchmarks that measure the writer's cost
    bill_cache_hits: bool = False  # response-cache hits are free unless the policy is "full"
    request_log: bool = True  # the JSON request line on stdout
    project_id: str | None = None  # Google Cloud project, for the trace field of the request line
    budget_store: str = "postgres"  # postgres | redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    budget_webhook_url: str | None = None
    prices_poll_s: float = 30.0  # the price book's fallback poll (LISTEN/NOTIFY is the fast path)
    shutdown_grace_s: float = 8.0  # after SIGTERM, in-flight requests get this long, then are cut
    budget_call_in_s: float = 0.3  # a refused request calls other instances' slices in, waiting this long (0: off)
    gc_freeze: bool = True  # freeze the start-up heap after the first requests (billingproxy.proxy.heap)

    @classmethod
    def from_env(cls) -> ProxySettings:
        store = _raw("BILLINGPROXY_BUDGET_STORE") or "postgres"
        if store not in ("postgres", "redis"):
            raise ConfigError(f"BILLINGPROXY_BUDGET_STORE must be postgres or redis, got {store!r}")
        policy = _raw("BILLINGPROXY_CACHE_HIT_POLICY") or "free"
        if policy not in ("free", "full"):
            raise ConfigError(f"BILLINGPROXY_CACHE_HIT_POLICY must be free or full, got {policy!r}")
        default_max, max_output = (
            _int("BILLINGPROXY_DEFAULT_MAX_TOKENS", 4096),
            _int("BILLINGPROXY_MAX_OUTPUT_TOKENS", 1_000_000),
        )
        if not 1 <= default_max <= max_output:
            raise ConfigError("BILLINGPROXY_DEFAULT_MAX_TOKENS must be between 1 and BILLINGPROXY_MAX_OUTPUT_TOKENS")
        body_mb = _float("BILLINGPROXY_MAX_BODY_MB", 8)
        if body_mb <= 0:
            raise ConfigError("BILLINGPROXY_MAX_BODY_MB must be positive")
        poll_s = _float("BILLINGPROXY_PRICES_POLL_S", 30)
        if not 0.1 <= poll_s <= 3600:
            raise ConfigError("BILLINGPROXY_PRICES_POLL_S must be between 0.1 and 3600 seconds")
        grace_s = _float("BILLINGPROXY_SHUTDOWN_GRACE_S", 8)
        if not 0.5 <= grace_s <= 3600:
            raise ConfigError("BILLINGPROXY_SHUTDOWN_GRACE_S must be between 0.5 and 3600 seconds")
        call_in_ms = _float("BILLINGPROXY_BUDGET_CALL_IN_MS", 300)
        if not 0 <= call_in_ms <= 5000:
            raise ConfigError("BILLINGPROXY_BUDGET_CALL_IN_MS must be between 0 (off) and 5000")
        return cls(
            budget_call_in_s=call_in_ms / 1000,
            shutdown_grace_s=grace_s,
            gc_freeze=_raw("BILLINGPROXY_GC_FREEZE") != "0",
            prices_poll_s=poll_s,
            default_max_tokens=default_max,
            max_output_tokens=max_output,
            max_body_bytes=int(body_mb * 1024 * 1024),
            write_usage=_raw("BILLINGPROXY_WRITE_USAGE") != "0",
            bill_cache_hits=policy == "full",
            request_log=_raw("BILLINGPROXY_REQUEST_LOG") != "0",
            project_id=_raw("GOOGLE_CLOUD_PROJECT") or _raw("GCP_PROJECT"),
            budget_store=store,
            redis_url=_raw("BILLINGPROXY_REDIS_URL") or _raw("REDIS_URL") or "redis://127.0.0.1:6379/0",
            budget_webhook_url=_raw("BILLINGPROXY_BUDGET_WEBHOOK_URL"),
        )


def cloud_logging_target(project: str | None = None) -> tuple[str, str | None]:
    """(project, API endpoint) for ``usage replay --from-cloud-logging``: the project from the
    option, else ``GOOGLE_CLOUD_PROJECT`` / ``GCP_PROJECT``; the endpoint only for tests (a local
    fake of the Logging API, reached without credentials)."""
    project = project or _raw("GOOGLE_CLOUD_PROJECT") or _raw("GCP_PROJECT")
    if not project:
        raise ConfigError("--project, GOOGLE_CLOUD_PROJECT or GCP_PROJECT must name the Cloud Logging project")
    return project, _raw("BILLINGPROXY_CLOUD_LOGGING_ENDPOINT")


def service_port(default: int = 4001) -> int:
    """The billing service's port: ``$PORT`` (Cloud Run sets it), else ``default``."""
    return _int("PORT", default)


@dataclass(frozen=True)
class DevStackSettings:
    """``make run``: where the local stack listens and which database it uses."""

    database_url: str | None  # None: the embedded PostgreSQL under .data/
    master_key: str | None
    port: int = 4000
    service_port: int = 4001

    @classmethod
    def from_env(cls) -> DevStackSettings:
        port = _int("PORT", 4000)
        return cls(
            database_url=_raw("DATABASE_URL"),
            master_key=_raw("PROXY_MASTER_KEY"),
            port=port,
            service_port=_int("BILLING_SERVICE_PORT", port + 1),
        )


def is_set(name: str) -> bool:
    """Whether a variable config.yaml refers to (``os.environ/NAME``) is set: provider credentials
    are LiteLLM's to read, so they are not in the configuration table."""
    return _raw(name) is not None


def public_url() -> str:
    """The billing service's address as tenants reach it (portal links): BILLINGPROXY_PUBLIC_URL."""
    return _raw("BILLINGPROXY_PUBLIC_URL") or "http://127.0.0.1:4001"


def interrupted_policy() -> str:
    """``BILLINGPROXY_INTERRUPTED_POLICY``: what ``usage replay``/``usage audit`` charge for an
    admitted request that never completed: ``estimate`` (its prompt tokens) or ``zero``."""
    policy = _raw("BILLINGPROXY_INTERRUPTED_POLICY") or "estimate"
    if policy not in ("estimate", "zero"):
        raise ConfigError(f"BILLINGPROXY_INTERRUPTED_POLICY must be estimate or zero, got {policy!r}")
    return policy
