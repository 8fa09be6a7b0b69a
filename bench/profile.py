"""Where the proxy's CPU goes: py-spy samples the stock proxy and ours under the same load.

Samples only the thread holding the GIL (CPU, not waiting), then prints the functions whose
inclusive share differs most between the two, and the share of our own code in ours.

    python -m bench.profile --requests 3000 --concurrency 8 --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.compare import database, drive, start_proxy, start_upstream, tenant_token
from testkit.support import MASTER_KEY, VENV_BIN

OURS = ("billingproxy/", "callbacks/")


def inclusive_shares(raw: Path) -> Counter[str]:
    """Function → share of samples with it on the stack (py-spy's raw format, line numbers dropped)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():  # a frame name py-spy printed across lines (a docstring)
            continue
        total += int(samples)
        for frame in {re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")}:
            counts[frame] += int(samples)
    return Counter({frame: n / total for frame, n in counts.items()}) if total else counts


def profile(variant: str, workdir: Path, upstream_url: str, db_url: str, args) -> tuple[Counter[str], float]:
    proxy = start_proxy(variant, workdir, upstream_url, db_url, {})
    try:
        token = MASTER_KEY if variant == "stock" else tenant_token(db_url)
        asyncio.run(drive(proxy.url, token, 300, args.concurrency, proxy.process.pid))  # warm-up
        raw = workdir / f"{variant}.txt"
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(proxy.process.pid), "--format", "raw", "--gil",
             "--nonblocking", "--rate", "250", "--duration", str(args.seconds), "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = asyncio.run(drive(proxy.url, token, args.requests, args.concurrency, proxy.process.pid))
        spy.wait(args.seconds + 30)
        print(f"{variant:6} {result.rps:7.1f} req/s  {result.cpu_ms_per_request:.2f} CPU ms/request", flush=True)
        return inclusive_shares(raw), result.cpu_ms_per_request
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=12, help="sampling window (shorter than the load)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    upstream, upstream_url = start_upstream(0)
    db_url, embedded = database()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        stock, _ = profile("stock", workdir, upstream_url, db_url, args)
        ours, _ = profile("ours", workdir, upstream_url, db_url, args)
    finally:
        upstream.terminate()
        if embedded is not None:
            embedded.destroy()

    print(f"\nlargest differences in inclusive share of GIL samples (ours minus stock), top {args.top}:")
    frames = sorted(set(stock) | set(ours), key=lambda f: ours[f] - stock[f], reverse=True)
    for frame in frames[: args.top]:
        print(f"  {100 * (ours[frame] - stock[frame]):+6.2f} %   stock {100 * stock[frame]:5.2f} %"
              f"   ours {100 * ours[frame]:5.2f} %   {frame[:110]}")  # fmt: skip
    print("\nour code in ours (inclusive share of GIL samples):")
    for frame, share in ours.most_common():
        if any(part in frame for part in OURS) and share >= 0.001:
            print(f"  {100 * share:5.2f} %   {frame[:110]}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
