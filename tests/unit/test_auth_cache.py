"""The authenticator's cache rules, with lookups that count their calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billingproxy.access import Authenticator, KeyRecord, auth_metadata, limits_from_auth
from billingproxy.config import AuthSettings
from billingproxy.errors import Refusal, Unavailable
from billingproxy.tokens import hash_token

TOKEN = "sk-bp-" + "t" * 43
MASTER = "sk-master-" + "m" * 32


def record(**changes) -> KeyRecord:
    base = dict(
        key_id="key_1", key_hash=hash_token(TOKEN), tenant_id="tn_1", tenant_name="acme", tenant_status="active",
        allowed_models=("gpt-4o",), rpm_limit=None, tpm_limit=None, budget_usd=None, budget_period="monthly",
        customer_id=None,
    )  # fmt: skip
    return KeyRecord(**{**base, **changes})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self, result: KeyRecord | None) -> None:
        self.result = result
        self.calls = 0
        self.down = False

    async def lookup(self, key_hash: str) -> KeyRecord | None:
        self.calls += 1
        if self.down:
            raise Unavailable("database is down")
        return self.result if self.result and self.result.key_hash == key_hash else None


def make(store: Store, clock: Clock, **settings) -> Authenticator:
    return Authenticator(
        AuthSettings(cache_ttl_s=10, negative_ttl_s=5, **settings),
        lookup_key=store.lookup,
        lookup_tenant=store.lookup,
        master_key=MASTER,
        clock=clock,
    )


async def test_warm_key_needs_no_lookup_until_the_ttl_passes():
    store, clock = Store(record()), Clock()
    auth = make(store, clock)
    for _ in range(5):
        assert (await auth.authenticate(f"Bearer {TOKEN}")).record.tenant_id == "tn_1"
    assert store.calls == 1
    clock.now += 10.1
    await auth.authenticate(TOKEN)
    assert store.calls == 2


async def test_unknown_keys_are_cached_negatively_for_a_shorter_time():
    store, clock = Store(None), Clock()
    auth = make(store, clock)
    for _ in range(3):
        with pytest.raises(Refusal) as caught:
            await auth.authenticate("sk-bp-unknown")
        assert caught.value.status == 401
    assert store.calls == 1
    clock.now += 5.1
    with pytest.raises(Refusal):
        await auth.authenticate("sk-bp-unknown")
    assert store.calls == 2


async def test_revocation_suspension_and_expiry_are_seen_after_the_ttl():
    store, clock = Store(record()), Clock()
    auth = make(store, clock)
    await auth.authenticate(TOKEN)
    store.result = record(revoked_at=datetime.now(UTC))
    await auth.authenticate(TOKEN)  # still cached
    clock.now += 11
    with pytest.raises(Refusal, match="revoked"):
        await auth.authenticate(TOKEN)
    store.result = record(tenant_status="suspended")
    clock.now += 11
    with pytest.raises(Refusal) as caught:
        await auth.authenticate(TOKEN)
    assert (caught.value.status, caught.value.code) == (403, "tenant_suspended")
    store.result = record(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    clock.now += 11
    with pytest.raises(Refusal, match="expired"):
        await auth.authenticate(TOKEN)


async def test_database_outage_serves_cached_keys_and_refuses_unknown_ones_with_503():
    store, clock = Store(record()), Clock()
    auth = make(store, clock)
    await auth.authenticate(TOKEN)
    store.down = True
    clock.now += 60  # well past the TTL
    assert (await auth.authenticate(TOKEN)).record.tenant_id == "tn_1"
    with pytest.raises(Refusal) as caught:
        await auth.authenticate("sk-bp-someone-else")
    assert (caught.value.status, caught.value.code) == (503, "auth_unavailable")


async def test_master_key_and_missing_token():
    auth = make(Store(None), Clock())
    assert (await auth.authenticate(MASTER)).is_admin
    for missing in (None, "", "Bearer ", "   "):
        with pytest.raises(Refusal) as caught:
            await auth.authenticate(missing)
        assert caught.value.code == "missing_api_key"


async def test_cache_is_bounded():
    store, clock = Store(None), Clock()
    auth = make(store, clock, cache_size=3)
    for i in range(100):
        with pytest.raises(Refusal):
            await auth.authenticate(f"sk-bp-{i}")
    assert len(auth._cache) == 0 and len(auth._negative) == 64  # unknown tokens: their own, smaller bound


async def test_a_flood_of_random_tokens_then_an_outage_still_serves_warm_keys():
    store, clock = Store(record()), Clock()
    auth = make(store, clock, cache_size=100)
    await auth.authenticate(TOKEN)
    for i in range(5_000):  # 50x the cache size in unknown tokens
        with pytest.raises(Refusal):
            await auth.authenticate(f"sk-bp-random-{i}")
    store.down = True
    clock.now += 11  # past the TTL: the cached key is stale, the database is gone
    assert (await auth.authenticate(TOKEN)).record.tenant_id == "tn_1"  # stale-if-error, not 503


async def test_the_cache_keeps_the_keys_in_use():
    """LRU, not FIFO: a key used all the time is not evicted by a stream of other keys."""
    keys = {
        f"sk-bp-{i:02d}" + "k" * 40: record(key_id=f"key_{i}", key_hash=hash_token(f"sk-bp-{i:02d}" + "k" * 40))
        for i in range(20)
    }

    class Many(Store):
        async def lookup(self, key_hash: str) -> KeyRecord | None:
            self.calls += 1
            return next((r for r in keys.values() if r.key_hash == key_hash), None)

    store, clock = Many(None), Clock()
    auth = make(store, clock, cache_size=5)
    hot, *others = keys
    for other in others:
        await auth.authenticate(hot)
        await auth.authenticate(other)
    hot_lookups = store.calls - len(others)
    assert hot_lookups == 1


async def test_allow_list():
    auth = make(Store(record()), Clock())
    principal = await auth.authenticate(TOKEN)
    limits = limits_from_auth(auth_metadata(principal.record), principal.record.allowed_models)
    assert limits.allows("gpt-4o") and not limits.allows("gpt-4o-mini")
    master = await auth.authenticate(MASTER)
    assert master.is_admin and limits_from_auth(None, None) is None  # the master key has no tenant limits


async def test_a_key_evicted_lately_is_still_served_during_an_outage():
    """Stale-if-error covers keys the LRU pushed out lately (a burst of other keys just before the
    outage), not only the ones still cached; it never serves them while the database answers."""
    keys = {
        f"sk-bp-{i:02d}" + "e" * 40: record(key_id=f"key_{i}", key_hash=hash_token(f"sk-bp-{i:02d}" + "e" * 40))
        for i in range(8)
    }

    class Many(Store):
        async def lookup(self, key_hash: str) -> KeyRecord | None:
            if self.down:
                raise Unavailable("database down")
            self.calls += 1
            return next((r for r in keys.values() if r.key_hash == key_hash), None)

    store, clock = Many(None), Clock()
    auth = make(store, clock, cache_size=3)
    first, *others = keys
    await auth.authenticate(first)
    for other in others:  # 7 other keys through a cache of 3: the first is evicted
        await auth.authenticate(other)
    assert hash_token(first) not in auth._cache
    store.down = True
    assert (await auth.authenticate(first)).record.key_id == "key_0"  # served, not 503
    store.down = False
    calls = store.calls
    await auth.authenticate(first)
    assert store.calls == calls + 1  # with the database back, it is looked up again
