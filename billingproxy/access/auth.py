"""Token → tenant resolution with a per-process cache.

A warm request costs one SHA-256 and one dict lookup: no database query. Positive and negative
answers are cached for a short TTL (so revocations and suspensions take effect within it). If
the database is unreachable, keys already in the cache — or evicted from it lately — keep working
(stale-if-error, bounded by ``stale_max_s``) and unknown keys are refused with 503: the gateway
fails closed.

Known keys live in an LRU of ``cache_size``; unknown tokens in a separate, smaller one, so a
flood of random tokens can never evict a working key (and then turn a database blip into 503s
for every tenant).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billingproxy.config import AuthSettings
from billingproxy.errors import Refusal, Unavailable
from billingproxy.tenants import key_state
from billingproxy.tokens import constant_time_equals, hash_token

__all__ = ["Authenticator", "KeyRecord", "Principal", "strip_bearer"]


@dataclass(frozen=True)
class KeyRecord:
    """One API key joined with its tenant, as the key store returns it."""

    key_id: str | None
    key_hash: str
    tenant_id: str
    tenant_name: str
    tenant_status: str
    allowed_models: tuple[str, ...]
    rpm_limit: int | None
    tpm_limit: int | None
    budget_usd: Decimal | None
    budget_period: str
    customer_id: str | None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    # The key's own budget and limits (issue 19), on top of the tenant's.
    key_budget_usd: Decimal | None = None
    key_budget_period: str = "monthly"
    key_rpm_limit: int | None = None
    key_tpm_limit: int | None = None
    key_model_limits: tuple[tuple[str, int | None, int | None], ...] = ()  # (model, rpm, tpm)
    # Every end user's budget, and the overrides: ((end user, budget or None, period or None), ...).
    end_user_budget_usd: Decimal | None = None
    end_user_budget_period: str = "daily"
    # Not part of the hash: LiteLLM's adapter hashes the record on every request (its template cache).
    end_user_overrides: tuple[tuple[str, Decimal | None, str | None], ...] = field(
        default=(), hash=False, compare=False
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant key, or the admin master key."""

    key_hash: str
    is_admin: bool = False
    record: KeyRecord | None = None


KeyLookup = Callable[[str], Awaitable[KeyRecord | None]]
TenantLookup = Callable[[str], Awaitable[KeyRecord | None]]


class _Entry:
    __slots__ = ("fetched_at", "record", "valid")

    def __init__(self, record: KeyRecord | None, fetched_at: float) -> None:
        self.record = record
        self.fetched_at = fetched_at
        self.valid = True  # False once a change was announced: refetch, but keep it for stale-if-error


EndUserBudgets = dict[str, tuple[Decimal | None, str | None]]


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        *,
        lookup_key: KeyLookup,
        lookup_tenant: TenantLookup,
        master_key: str | None,
        stale_max_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._lookup_key = lookup_key
        self._lookup_tenant = lookup_tenant
        self._master_key = master_key
        self._stale_max_s = stale_max_s
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()  # known keys, least recently used first
        self._negative: OrderedDict[str, _Entry] = OrderedDict()  # unknown tokens, oldest first
        self._negative_size = max(64, settings.cache_size // 10)
        # Known keys the LRU evicted lately, kept for stale-if-error only (never served while the
        # database answers): an outage right after a burst of other keys still serves them.
        self._evicted: OrderedDict[str, _Entry] = OrderedDict()
        self._evicted_size = max(64, settings.cache_size // 10)
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        # Per tenant, its end-user overrides as last fetched (admission reads them: no query per request).
        self._end_users: dict[str, EndUserBudgets] = {}
        self._generation = 0  # bumped by every invalidation: a fetch that started before is not cached
        self.db_lookups = 0  # observable in tests and benchmarks
        self.invalidations = 0

    def end_user_budgets(self, tenant_id: str) -> EndUserBudgets:
        """The tenant's per-end-user overrides, from its most recently fetched key."""
        return self._end_users.get(tenant_id) or {}

    def invalidate(self, tenant_id: str | None = None) -> int:
        """A tenant's keys changed (None: anything may have): refetch them on their next use.
        Entries are kept, marked, so a database outage right after still serves them (stale-if-error)."""
        self._generation += 1
        self.invalidations += 1
        count = 0
        for entry in self._cache.values():
            if tenant_id is None or (entry.record is not None and entry.record.tenant_id == tenant_id):
                entry.valid = False
                count += 1
        self._negative.clear()  # a key created for an unknown token; cheap to refetch
        return count

    async def authenticate(self, token: str | None) -> Principal:
        token = strip_bearer(token)
        if not token:
            raise Refusal(401, "missing_api_key", "Missing API key: send 'Authorization: Bearer <token>'.")
        if self._master_key and constant_time_equals(token, self._master_key):
            return Principal(key_hash=hash_token(token), is_admin=True)
        gateway = self.settings.gateway_token
        if gateway and self.settings.gateway_tenant and constant_time_equals(token, gateway):
            record = await self._cached(
                "gateway:" + self.settings.gateway_tenant,
                lambda: self._lookup_tenant(self.settings.gateway_tenant or ""),
            )
        else:
            key_hash = hash_token(token)
            record = await self._cached(key_hash, lambda: self._lookup_key(key_hash))
        return Principal(key_hash=record.key_hash, record=_check_usable(record))

    async def _cached(self, cache_key: str, fetch: Callable[[], Awaitable[KeyRecord | None]]) -> KeyRecord:
        now = self._clock()
        entry = self._cache.get(cache_key)
        if entry is not None:
            if entry.valid and now - entry.fetched_at < self.settings.cache_ttl_s:
                self._cache.move_to_end(cache_key)  # LRU: a key in use stays
                return entry.record  # type: ignore[return-value]  (only known keys are here)
        elif (negative := self._negative.get(cache_key)) is not None and (
            now - negative.fetched_at < self.settings.negative_ttl_s
        ):
            return _known(None)
        generation = self._generation
        try:
            record = await self._single_flight(cache_key, fetch)
        except Unavailable:
            entry = entry or self._evicted.get(cache_key)
            if entry is not None and entry.record is not None and now - entry.fetched_at < self._stale_max_s:
                return entry.record  # stale-if-error: keep serving known keys during an outage
            raise Refusal(503, "auth_unavailable", "Authentication is temporarily unavailable; retry.") from None
        fresh = _Entry(record, self._clock())
        fresh.valid = generation == self._generation  # a change announced mid-fetch: use once, refetch next time
        self._store(cache_key, fresh)
        if record is not None:
            self._end_users[record.tenant_id] = {
                name: (budget, period) for name, budget, period in record.end_user_overrides
            }
        return _known(record)

    async def _single_flight(self, cache_key: str, fetch: Callable[[], Awaitable[KeyRecord | None]]):
        """Concurrent misses for one key share a single database query."""
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = future
        try:
            self.db_lookups += 1
            result = await fetch()
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[cache_key]

    def _store(self, cache_key: str, entry: _Entry) -> None:
        cache, size = (self._cache, self.settings.cache_size) if entry.record else (self._negative, self._negative_size)
        (self._negative if entry.record else self._cache).pop(cache_key, None)  # a key created or deleted
        cache[cache_key] = entry
        cache.move_to_end(cache_key)
        while len(cache) > size:
            evicted_key, evicted = cache.popitem(last=False)
            if evicted.record is not None:
                self._evicted[evicted_key] = evicted
                if len(self._evicted) > self._evicted_size:
                    self._evicted.popitem(last=False)
        if entry.record is not None:
            self._evicted.pop(cache_key, None)  # back in the cache


def strip_bearer(token: str | None) -> str | None:
    if token is None:
        return None
    parts = token.split(None, 1)
    if parts and parts[0].lower() == "bearer":
        parts = parts[1:]
    return parts[0].strip() if parts else None


def _known(record: KeyRecord | None) -> KeyRecord:
    if record is None:
        raise Refusal(401, "invalid_api_key", "Invalid API key.")
    return record


_UNUSABLE = {"revoked": "API key has been revoked.", "expired": "API key has expired."}


def _check_usable(record: KeyRecord) -> KeyRecord:
    state = key_state(record.revoked_at, record.expires_at)
    if state != "active":
        raise Refusal(401, "invalid_api_key", _UNUSABLE[state])
    if record.tenant_status != "active":
        raise Refusal(403, "tenant_suspended", f"Tenant {record.tenant_name} is suspended.")
    return record
