"""Micro-benchmark of the auth path with a warm cache: our lookup, and the LiteLLM adapter.

python -m bench.auth_micro --iterations 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from billingproxy.access import Authenticator, KeyRecord
from billingproxy.config import AuthSettings
from billingproxy.tokens import generate_token, hash_token


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


async def main_async(iterations: int) -> None:
    token = generate_token()
    record = KeyRecord(
        key_id="key_1", key_hash=hash_token(token), tenant_id="tn_1", tenant_name="acme", tenant_status="active",
        allowed_models=("gpt-4o",), rpm_limit=100, tpm_limit=None, budget_usd=None, budget_period="monthly",
        customer_id="cus_1",
    )  # fmt: skip

    async def lookup(_: str) -> KeyRecord:
        return record

    auth = Authenticator(AuthSettings(cache_ttl_s=30), lookup_key=lookup, lookup_tenant=lookup, master_key="m" * 40)
    await auth.authenticate(token)

    from callbacks.auth import to_user_api_key_auth  # the adapter: Principal -> UserAPIKeyAuth

    core, adapter = [], []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        principal = await auth.authenticate(f"Bearer {token}")
        middle = time.perf_counter_ns()
        to_user_api_key_auth(principal)
        ended = time.perf_counter_ns()
        core.append((middle - started) / 1000)
        adapter.append((ended - middle) / 1000)
    for name, samples in (("authenticate (warm cache)", core), ("to_user_api_key_auth", adapter)):
        p50, p99 = percentiles(samples)
        print(f"{name:28} p50 {p50:7.2f} µs   p99 {p99:7.2f} µs   ({iterations} calls)")
    print(f"database lookups: {auth.db_lookups} (1 = the cold one)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    asyncio.run(main_async(parser.parse_args().iterations))


if __name__ == "__main__":
    main()
