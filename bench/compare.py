"""Side-by-side proxy benchmark: the stock LiteLLM proxy against ours, in the same run.

Starts the fake upstream (its own process), one proxy per variant, and drives them in
alternation with the same bounded load from 127.0.0.1. Prints per variant and concurrency:
requests/s, p50/p99 latency, p50/p99 of ``x-litellm-overhead-duration-ms``, peak RSS, and the
ratios against the stock proxy; plus time-to-ready. Medians over rounds, because these machines
are shared and noisy.

    python -m bench.compare --requests 2000 --concurrency 8 64 --rounds 3 \
        --variants stock ours ours-no-writer --json bench/results/compare.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psutil

from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.support import (
    MASTER_KEY,
    ProxyProcess,
    create_database,
    free_port,
    migrate_with_prices,
    test_config,
    wait_until,
)

# Per variant: which of our plugins the proxy loads, and env switches. "stock" loads none and
# authenticates with the master key, like the plain LiteLLM proxy.
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "stock": ("none", {}),
    "auth-only": ("auth", {}),
    "ours": ("all", {}),
    "ours-budget": ("all", {}),  # same proxy setup; the tenant has a budget, so every request reserves
    # Budgets at three levels: the tenant's, the key's and the end user's (the tenant's default, with
    # 1,000 overrides for other end users loaded into the auth cache); every request reserves at each.
    "ours-levels": ("all", {}),
    "ours-no-writer": ("all", {"BILLINGPROXY_WRITE_USAGE": "0"}),
    "ours-no-log": ("all", {"BILLINGPROXY_REQUEST_LOG": "0"}),
    # Our plugins without the start-up heap freeze (billingproxy.proxy.heap): their own cost alone.
    "ours-no-freeze": ("all", {"BILLINGPROXY_GC_FREEZE": "0"}),
    # Tuning: worker processes per instance (LiteLLM's NUM_WORKERS; uvicorn, uvloop), and the
    # per-request uvicorn access line that LITELLM_LOG=WARNING (our default) turns off.
    "stock-2w": ("none", {"NUM_WORKERS": "2"}),
    "ours-2w": ("all", {"NUM_WORKERS": "2"}),
    "ours-access-log": ("all", {"LITELLM_LOG": "INFO"}),
    # The stock proxy again: its ratio to stock is the run's own noise floor (an A/A comparison).
    "stock-again": ("none", {}),
}
BUDGETED = {"ours-budget", "ours-levels"}
LEVELS = {"ours-levels"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "benchmark request words"}], "max_tokens": 8}
BODIES = {"ours-levels": {**BODY, "user": "bench-end-user"}}  # the end user whose budget applies


@dataclass
class Result:
    variant: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    overhead_p50_ms: float | None
    overhead_p99_ms: float | None
    peak_rss_mb: float
    cpu_ms_per_request: float = 0.0  # proxy CPU time per request: far less noisy than wall-clock rates
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    round_no: int = 0
    # Summaries only: against stock, each the median of the per-round ratios (a round runs every
    # variant back to back, so a slow minute of the machine hits both sides of a ratio).
    rps_ratio: float | None = None
    cpu_ratio: float | None = None


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


async def drive(
    url: str, token: str, requests: int, concurrency: int, pid: int, body: dict = BODY, warmup: int = 0
) -> Result:
    """``requests`` requests from ``concurrency`` workers, measured after ``warmup`` unmeasured ones
    on the same connections (opening 64 connections at once is a transient of the load generator:
    a few of them are served seconds late, by stock and ours alike, and would decide the p99)."""
    latencies: list[float] = []
    overheads: list[float] = []
    errors = 0
    peak = rss_mb(pid)
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker(remaining) -> None:
            nonlocal errors
            for _ in remaining:
                started = time.perf_counter()
                try:
                    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                        overhead = response.headers.get("x-litellm-overhead-duration-ms")
                except aiohttp.ClientError:
                    ok, overhead = False, None
                latencies.append((time.perf_counter() - started) * 1000)
                if not ok:
                    errors += 1
                if overhead:
                    overheads.append(float(overhead))

        async def sample_rss() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.25)

        if warmup:
            warm = iter(range(warmup))
            await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
            latencies.clear()
            overheads.clear()
            errors = 0
        remaining = iter(range(requests))
        sampler = asyncio.create_task(sample_rss())
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(remaining) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_used = cpu_seconds(pid) - cpu_before
        sampler.cancel()
    return Result(
        variant="",
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        rps=requests / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        overhead_p50_ms=percentile(overheads, 50) if overheads else None,
        overhead_p99_ms=percentile(overheads, 99) if overheads else None,
        peak_rss_mb=peak,
        cpu_ms_per_request=cpu_used * 1000 / requests,
        latencies_ms=latencies,
    )


def start_upstream(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "testkit.fakes.upstream", "--port", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    wait_until(lambda: httpx.get(url + "/_stats", timeout=1).status_code == 200, timeout=30, what="fake upstream")
    return process, url


def database() -> tuple[str, object | None]:
    """A fresh migrated database on TEST_DATABASE_URL's server, or on an embedded server."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    embedded = None
    if not server_url:
        from testkit.support import EmbeddedPostgres

        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-pg-")) / "data")
        server_url = embedded.url()
    url = create_database(server_url)
    migrate_with_prices(url)  # as `db migrate`: the schema and config.yaml's prices
    return url, embedded


def tenant_token(url: str, budget_usd: str | None = None, levels: bool = False) -> str:
    with db.connect(url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"bench-{uuid.uuid4().hex[:8]}", budget_usd=budget_usd)
        if not levels:
            return store.create_key(tenant.id)[1]
        store.update_tenant(tenant.id, end_user_budget_usd="1000000", end_user_budget_period="daily")
        for i in range(1000):
            conn.execute(
                "INSERT INTO end_user_budgets (tenant_id, end_user, budget_usd) VALUES (%s, %s, 5)",
                (tenant.id, f"other-{i}"),
            )
        conn.commit()
        return store.create_key(tenant.id, budget_usd="1000000")[1]


# --pin: the proxy under test gets a core of its own (like Cloud Run's --cpu 1) and the load
# generator and the fake upstream the other, so neither steals the other's CPU mid-round; with both
# sharing two cores, per-round ratios on this machine ranged 0.80-1.19 for the same code.
PROXY_CPUS: set[int] | None = None


@contextlib.contextmanager
def _cpus(cpus: set[int] | None):
    """Processes started inside inherit these CPUs (the calling thread's affinity)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def start_proxy(variant: str, workdir: Path, upstream_url: str, db_url: str, extra_env: dict[str, str]) -> ProxyProcess:
    with _cpus(PROXY_CPUS):  # the proxy (and what it starts) runs on these CPUs
        plugins, variant_env = VARIANTS[variant]
        config = test_config(upstream_url, plugins=plugins != "none")
        if plugins == "auth":
            config["litellm_settings"].pop("callbacks", None)
        env = {"BILLINGPROXY_DATABASE_URL": db_url, **variant_env, **extra_env}
        return ProxyProcess(workdir, config, env).start(timeout=180)


def summarise(results: list[Result]) -> dict[tuple[str, int], Result]:
    """Per (variant, concurrency): medians over rounds of the rates, percentiles over every
    round's samples pooled (a p99 of a few hundred samples is a handful of requests), and the
    ratios to stock as medians of the per-round ratios."""
    grouped: dict[tuple[str, int], list[Result]] = {}
    for result in results:
        grouped.setdefault((result.variant, result.concurrency), []).append(result)
    by_round = {(r.variant, r.concurrency, r.round_no): r for r in results}
    summary = {}
    for key, runs in grouped.items():

        def med(attr: str, runs: list[Result] = runs) -> float | None:
            values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
            return statistics.median(values) if values else None

        def ratio(attr: str, runs: list[Result] = runs, key: tuple[str, int] = key) -> float | None:
            pairs = [(r, by_round.get(("stock", key[1], r.round_no))) for r in runs]
            values = [getattr(r, attr) / getattr(s, attr) for r, s in pairs if s is not None and getattr(s, attr)]
            return statistics.median(values) if values else None

        latencies = [x for r in runs for x in r.latencies_ms]
        summary[key] = Result(
            variant=key[0],
            concurrency=key[1],
            requests=sum(r.requests for r in runs),
            errors=sum(r.errors for r in runs),
            rps=med("rps"),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            overhead_p50_ms=med("overhead_p50_ms"),
            overhead_p99_ms=med("overhead_p99_ms"),
            peak_rss_mb=max(r.peak_rss_mb for r in runs),
            cpu_ms_per_request=med("cpu_ms_per_request"),
            latencies_ms=latencies,
            rps_ratio=ratio("rps"),
            cpu_ratio=ratio("cpu_ms_per_request"),
        )
    return summary


_NOT_IN_ROWS = ("latencies_ms", "rps_ratio", "cpu_ratio", "round_no")  # rows carry the ratios by their own names


def round_ratios(results: list[Result]) -> dict[tuple[str, int], list[float]]:
    """Per (variant, concurrency): the req/s ratio to stock of every round."""
    stock = {(r.concurrency, r.round_no): r.rps for r in results if r.variant == "stock"}
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if (r.concurrency, r.round_no) in stock:
            ratios.setdefault((r.variant, r.concurrency), []).append(r.rps / stock[(r.concurrency, r.round_no)])
    return ratios


def print_spread(ratios: dict[tuple[str, int], list[float]]) -> None:
    """How far single rounds scatter: the noise a median over rounds smooths (stock-again: A/A)."""
    print("\nper-round req/s ratio vs stock (quartiles, range):")
    for (variant, concurrency), values in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if variant == "stock" or len(values) < 2:
            continue
        q1, q2, q3 = statistics.quantiles(values, n=4)
        print(
            f"  {variant:16} c={concurrency:<3} median {q2:.3f}  quartiles {q1:.3f}-{q3:.3f}  "
            f"range {min(values):.3f}-{max(values):.3f}  over {len(values)} rounds"
        )


def print_table(summary: dict[tuple[str, int], Result], ready: dict[str, list[float]]) -> list[dict]:
    rows = []
    header = (
        f"{'variant':16} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ovh p50':>8} {'ovh p99':>8} "
        f"{'RSS MB':>7} {'errors':>6} {'cpu ms':>6} {'rps/stock':>9} {'p99/stock':>9} {'cpu/stock':>9}"
    )
    print(header)
    print("-" * len(header))
    for (variant, concurrency), result in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0] != "stock")):
        stock = summary.get(("stock", concurrency))
        rps_ratio, cpu_ratio = result.rps_ratio, result.cpu_ratio
        p99_ratio = result.p99_ms / stock.p99_ms if stock else None

        def fmt(value: float | None, spec: str = ".1f") -> str:
            return "-" if value is None else format(value, spec)

        print(
            f"{variant:16} {concurrency:>4} {result.rps:>8.1f} {result.p50_ms:>8.1f} {result.p99_ms:>8.1f} "
            f"{fmt(result.overhead_p50_ms):>8} {fmt(result.overhead_p99_ms):>8} {result.peak_rss_mb:>7.0f} "
            f"{result.errors:>6} {result.cpu_ms_per_request:>6.2f} {fmt(rps_ratio, '.3f'):>9} "
            f"{fmt(p99_ratio, '.3f'):>9} {fmt(cpu_ratio, '.3f'):>9}"
        )
        row = {
            k: v for k, v in asdict(result).items() if k not in ("latencies_ms", "rps_ratio", "cpu_ratio", "round_no")
        }
        rows.append(
            {**row, "rps_ratio_vs_stock": rps_ratio, "p99_ratio_vs_stock": p99_ratio, "cpu_ratio_vs_stock": cpu_ratio}
        )
    print()
    for variant, seconds in ready.items():
        stock = statistics.median(ready["stock"]) if "stock" in ready else None
        ratio = statistics.median(seconds) / stock if stock else None
        print(
            f"time-to-ready {variant:16} median {statistics.median(seconds):.2f} s over {len(seconds)} starts"
            + (f"   ratio vs stock {ratio:.3f}" if ratio else "")
        )
    return rows


def balanced_orders(names: list[str]) -> list[list[str]]:
    """A Williams design: every variant runs in every position, and follows every other variant,
    equally often over the orders returned (n of them for an even count, 2n for an odd one).

    A plain rotation (ABCD, BCDA, …) keeps the cyclic succession, so each variant always follows
    the same one and inherits whatever trailing work that one leaves on the core. (In two A/A runs
    with the rotation, the copy of stock that always ran after stock measured 0.953 and 0.958 of
    it; with this order, 1.035: within this machine's noise either way, but no longer built in.)"""
    n = len(names)
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + shift) % n for x in first] for shift in range(n)]
    if n % 2:
        rows += [list(reversed(row)) for row in rows]
    return [[names[i] for i in row] for row in rows]


def settle(pids: list[int], idle_share: float = 0.05, window_s: float = 0.1, timeout_s: float = 5.0) -> None:
    """Wait until no proxy is still busy with the previous block's trailing work (LiteLLM's logging
    worker, our writer): their CPU over a short window below ``idle_share`` of a core, or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window_s)
        if sum(cpu_seconds(pid) for pid in pids) - before < idle_share * window_s * len(pids):
            return


async def run_rounds(args, proxies: dict[str, ProxyProcess], tokens: dict[str, str]) -> list[Result]:
    results = []
    pids = [proxy.process.pid for proxy in proxies.values()]
    orders = balanced_orders(list(proxies))
    for concurrency in args.concurrency:
        for variant, proxy in proxies.items():  # warm-up: connections, caches, the writer
            body = BODIES.get(variant, BODY)
            await drive(proxy.url, tokens[variant], min(200, args.requests), concurrency, proxy.process.pid, body)
        for round_no in range(args.rounds):
            for variant in orders[round_no % len(orders)]:
                proxy = proxies[variant]
                body = BODIES.get(variant, BODY)
                settle(pids)
                # Each variant sat idle while the others ran: a short warm-up first, so a round measures
                # the steady state (an idle budgeted instance has handed its slice back and refills it
                # on the first request; that transient is not the plugins' per-request cost).
                result = await drive(
                    proxy.url, tokens[variant], args.requests, concurrency, proxy.process.pid, body, warmup=args.warmup
                )
                result.variant, result.round_no = variant, round_no
                results.append(result)
                print(f"  round {round_no + 1} c={concurrency} {variant:16} {result.rps:8.1f} req/s", flush=True)
    return results


async def direct_upstream(upstream_url: str, requests: int, concurrency: int) -> float:
    """The limit: the fake upstream driven directly by the same load generator."""
    result = await drive(upstream_url, "none", requests, concurrency, os.getpid())
    return result.rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests before each measured block")
    parser.add_argument("--ready-starts", type=int, default=2, help="extra starts per variant to time readiness")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=sorted(VARIANTS))
    parser.add_argument("--upstream-latency-ms", type=float, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="proxy on core 1, load generator on core 0"
    )
    args = parser.parse_args()

    global PROXY_CPUS
    db_url, embedded = database()  # PostgreSQL stays on every core
    if args.pin and len(os.sched_getaffinity(0)) >= 2:
        cores = sorted(os.sched_getaffinity(0))
        PROXY_CPUS = {cores[1]}
        os.sched_setaffinity(0, {cores[0]})  # this process, and the fake upstream it starts
    upstream, upstream_url = start_upstream(args.upstream_latency_ms)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    proxies: dict[str, ProxyProcess] = {}
    ready: dict[str, list[float]] = {v: [] for v in args.variants}
    try:
        for _ in range(args.ready_starts):  # alternate cold starts for the time-to-ready ratio
            for variant in args.variants:
                proxy = start_proxy(variant, workdir, upstream_url, db_url, {})
                ready[variant].append(proxy.ready_seconds)
                proxy.stop()
        for variant in args.variants:
            proxies[variant] = start_proxy(variant, workdir, upstream_url, db_url, {})
            ready[variant].append(proxies[variant].ready_seconds)
        tokens = {
            v: MASTER_KEY
            if v.startswith("stock")
            else tenant_token(db_url, "1000000" if v in BUDGETED else None, levels=v in LEVELS)
            for v in args.variants
        }
        limits = {c: asyncio.run(direct_upstream(upstream_url, args.requests, c)) for c in args.concurrency}
        results = asyncio.run(run_rounds(args, proxies, tokens))
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.terminate()
        if embedded is not None:
            embedded.destroy()
    summary = summarise(results)
    print()
    for concurrency, rps in limits.items():
        print(f"direct upstream (the limit) c={concurrency}: {rps:.1f} req/s")
    rows = print_table(summary, ready)
    ratios = round_ratios(results)
    print_spread(ratios)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "upstream_limit_rps": limits,
                    "time_to_ready_s": ready,
                    "results": rows,
                    "rps_ratio_per_round": {f"{v}@{c}": values for (v, c), values in ratios.items()},
                    "latency_samples_ms": {f"{v}@{c}": r.latencies_ms for (v, c), r in summary.items()},
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
