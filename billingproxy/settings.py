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
