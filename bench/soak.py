"""Soak: many requests through our proxy (all plugins, real PostgreSQL), RSS sampled over time.

    python -m bench.soak --requests 100000 --concurrency 32

Prints RSS after warm-up and at the end, and the growth; writes the samples as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.compare import database, drive, rss_mb, start_proxy, start_upstream, tenant_token
from testkit.support import MASTER_KEY


async def soak(url: str, token: str, pid: int, total: int, concurrency: int, chunk: int) -> list[tuple]:
    samples = []
    started = time.monotonic()
    done = 0
    while done < total:
        result = await drive(url, token, min(chunk, total - done), concurrency, pid)
        done += result.requests
        samples.append((done, round(time.monotonic() - started, 1), round(rss_mb(pid), 1), result.errors))
        print(f"{done:>7} requests  {samples[-1][1]:>7.1f} s  RSS {samples[-1][2]:7.1f} MB  errors {result.errors}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--variant", default="ours", choices=["ours", "stock"], help="stock: no plugins, master key")
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()
    upstream, upstream_url = start_upstream(0)
    db_url, embedded = database()
    proxy = start_proxy(args.variant, Path(tempfile.mkdtemp(prefix="soak-")), upstream_url, db_url, {})
    try:
        token = MASTER_KEY if args.variant == "stock" else tenant_token(db_url, "1000000")  # budgets on, too
        samples = asyncio.run(soak(proxy.url, token, proxy.process.pid, args.requests, args.concurrency, args.chunk))
    finally:
        proxy.stop()
        upstream.terminate()
        if embedded is not None:
            embedded.destroy()
    warm, last = samples[0][2], samples[-1][2]
    print(f"\nRSS after the first {samples[0][0]} requests: {warm} MB; after {samples[-1][0]}: {last} MB")
    print(f"growth: {last - warm:.1f} MB over {samples[-1][0] - samples[0][0]} requests")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"variant": args.variant, "samples": samples, "growth_mb": round(last - warm, 1)}
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
