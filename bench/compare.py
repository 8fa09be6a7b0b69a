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
from collections import Counter
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
    steal_share: float = 0.0  # of the block's wall time, how much the hypervisor took from the proxy's core
    error_kinds: dict[str, int] = field(default_factory=dict)  # HTTP status or exception name -> count
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    overheads_ms: list[float] = field(default_factory=list, repr=False)
    round_no: int = 0
    # Summaries only: against stock, pooled over the run (see summarise).
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


def steal_seconds(cpus: set[int] | None) -> float:
    """CPU time the hypervisor gave other guests on these cores (/proc/stat's steal column)."""
    if not cpus:
        return 0.0
    ticks = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks += int(values[7])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """At most ``concurrency`` connections, kept open between blocks (keep-alive). The client lets an
    idle connection go after 3 s, before uvicorn's 5 s (``timeout_keep_alive``): with aiohttp's 15 s a
    request sent as the server closes the connection fails (14 ServerDisconnected-like errors in one
    run, none of them reaching the proxy; stock and ours alike exposed)."""
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=3)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def drive(
    url: str,
    token: str,
    requests: int,
    concurrency: int,
    pid: int,
    body: dict = BODY,
    warmup: int = 0,
    session: aiohttp.ClientSession | None = None,
) -> Result:
    """``requests`` requests from ``concurrency`` workers, measured after ``warmup`` unmeasured ones
    on the same connections (opening 64 connections at once is a transient of the load generator:
    a few of them are served seconds late, by stock and ours alike, and would decide the p99).
    On ``session``'s open connections if given, else on a session of its own."""
    if session is None:
        async with client_session(concurrency) as own:
            return await drive(url, token, requests, concurrency, pid, body, warmup, own)
    latencies: list[float] = []
    overheads: list[float] = []
    kinds: Counter[str] = Counter()  # failed requests, by HTTP status or exception
    peak = rss_mb(pid)
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(remaining) -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                    await response.read()
                    kind = str(response.status)
                    overhead = response.headers.get("x-litellm-overhead-duration-ms")
            except aiohttp.ClientError as exc:
                kind, overhead = type(exc).__name__, None
            latencies.append((time.perf_counter() - started) * 1000)
            if kind != "200":
                kinds[kind] += 1
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
        kinds.clear()
    remaining = iter(range(requests))
    sampler = asyncio.create_task(sample_rss())
    cpu_before, steal_before = cpu_seconds(pid), steal_seconds(PROXY_CPUS)
    started = time.perf_counter()
    await asyncio.gather(*(worker(remaining) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_used = cpu_seconds(pid) - cpu_before
    stolen = steal_seconds(PROXY_CPUS) - steal_before
    sampler.cancel()
    return Result(
        variant="",
        concurrency=concurrency,
        requests=requests,
        errors=sum(kinds.values()),
        rps=requests / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        overhead_p50_ms=percentile(overheads, 50) if overheads else None,
        overhead_p99_ms=percentile(overheads, 99) if overheads else None,
        peak_rss_mb=peak,
        cpu_ms_per_request=cpu_used * 1000 / requests,
        steal_share=stolen / elapsed,
        latencies_ms=latencies,
        overheads_ms=overheads,
        error_kinds=dict(kinds),
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
# generator, the fake upstream and the embedded PostgreSQL the other, so neither steals the other's
# CPU mid-round; with both sharing two cores, per-round ratios on this machine ranged 0.80-1.19 for
# the same code. The database is another machine in production (Cloud SQL): its backends, and its
# autovacuum after thousands of inserts, must not run on the proxy's core.
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
    """Per (variant, concurrency), pooled over every round: req/s is all requests over all measured
    time, CPU per request all CPU over all requests, percentiles over all samples. Each variant's
    blocks are spread evenly over the same minutes (balanced order, short blocks), so a slow spell of
    the machine weighs on every variant alike; the ratios to stock are ratios of these pools."""
    grouped: dict[tuple[str, int], list[Result]] = {}
    for result in results:
        grouped.setdefault((result.variant, result.concurrency), []).append(result)
    summary = {}
    for (variant, concurrency), runs in grouped.items():
        requests = sum(r.requests for r in runs)
        latencies = [x for r in runs for x in r.latencies_ms]
        overheads = [x for r in runs for x in r.overheads_ms]
        summary[(variant, concurrency)] = Result(
            variant=variant,
            concurrency=concurrency,
            requests=requests,
            errors=sum(r.errors for r in runs),
            rps=requests / sum(r.requests / r.rps for r in runs),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            overhead_p50_ms=percentile(overheads, 50) if overheads else None,
            overhead_p99_ms=percentile(overheads, 99) if overheads else None,
            peak_rss_mb=max(r.peak_rss_mb for r in runs),
            cpu_ms_per_request=sum(r.cpu_ms_per_request * r.requests for r in runs) / requests,
            steal_share=statistics.median(r.steal_share for r in runs),
            error_kinds=dict(sum((Counter(r.error_kinds) for r in runs), Counter())),
            latencies_ms=latencies,
        )
    for (_, concurrency), result in summary.items():
        stock = summary.get(("stock", concurrency))
        if stock is not None:
            result.rps_ratio = result.rps / stock.rps
            result.cpu_ratio = result.cpu_ms_per_request / stock.cpu_ms_per_request
    return summary


# Rows carry the ratios by their own names.
_NOT_IN_ROWS = ("latencies_ms", "overheads_ms", "rps_ratio", "cpu_ratio", "round_no")


def round_ratios(results: list[Result]) -> dict[tuple[str, int], list[float]]:
    """Per (variant, concurrency): the req/s ratio to stock of every round."""
    stock = {(r.concurrency, r.round_no): r.rps for r in results if r.variant == "stock"}
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if (r.concurrency, r.round_no) in stock:
            ratios.setdefault((r.variant, r.concurrency), []).append(r.rps / stock[(r.concurrency, r.round_no)])
    return ratios


def print_spread(ratios: dict[tuple[str, int], list[float]]) -> None:
    """How far single rounds scatter: the noise the pooled figures average out (stock-again: A/A)."""
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
        row = {k: v for k, v in asdict(result).items() if k not in _NOT_IN_ROWS}
        rows.append(
            {**row, "rps_ratio_vs_stock": rps_ratio, "p99_ratio_vs_stock": p99_ratio, "cpu_ratio_vs_stock": cpu_ratio}
        )
    for (variant, concurrency), result in sorted(summary.items()):
        if result.error_kinds:
            print(f"errors {variant} c={concurrency}: {result.error_kinds}")
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


def per_concurrency(values: list[int], concurrencies: list[int], name: str) -> dict[int, int]:
    """One value for every concurrency, or one each (``--requests 40 320`` with ``--concurrency 8 64``)."""
    if len(values) == 1:
        values = values * len(concurrencies)
    if len(values) != len(concurrencies):
        raise SystemExit(f"--{name}: give one value, or one per --concurrency ({len(concurrencies)})")
    return dict(zip(concurrencies, values, strict=True))


async def run_rounds(args, proxies: dict[str, ProxyProcess], tokens: dict[str, str]) -> list[Result]:
    results = []
    pids = [proxy.process.pid for proxy in proxies.values()]
    orders = balanced_orders(list(proxies))
    requests, rounds, warmups = args.requests, args.rounds, args.warmup  # per concurrency (main)
    for concurrency in args.concurrency:
        # One client session per proxy for the whole level: its connections stay open between blocks,
        # so short blocks measure requests, not connection set-up.
        sessions = {variant: client_session(concurrency) for variant in proxies}
        try:
            for variant, proxy in proxies.items():  # warm-up: connections, caches, the writer
                body = BODIES.get(variant, BODY)
                await drive(
                    proxy.url, tokens[variant], 200, concurrency, proxy.process.pid, body, session=sessions[variant]
                )
            for round_no in range(rounds[concurrency]):
                for variant in orders[round_no % len(orders)]:
                    proxy = proxies[variant]
                    settle(pids)
                    # ``warmup`` unmeasured requests first where a variant sat idle long enough to
                    # lose its connections or its budget slice (an idle budgeted instance hands its
                    # slice back and refills it on the first request: not a per-request cost).
                    result = await drive(
                        proxy.url,
                        tokens[variant],
                        requests[concurrency],
                        concurrency,
                        proxy.process.pid,
                        BODIES.get(variant, BODY),
                        warmup=warmups[concurrency],
                        session=sessions[variant],
                    )
                    result.variant, result.round_no = variant, round_no
                    results.append(result)
                if (round_no + 1) % max(1, rounds[concurrency] // 10) == 0:
                    done = [r for r in results if r.concurrency == concurrency]
                    print(
                        f"  c={concurrency} round {round_no + 1}/{rounds[concurrency]}: " + _progress(done), flush=True
                    )
        finally:
            for session in sessions.values():
                await session.close()
    return results


def _progress(results: list[Result]) -> str:
    """Pooled req/s so far, per variant."""
    pooled: dict[str, list[float]] = {}
    for r in results:
        requests, seconds = pooled.setdefault(r.variant, [0.0, 0.0])
        pooled[r.variant] = [requests + r.requests, seconds + r.requests / r.rps]
    return "  ".join(f"{variant} {requests / seconds:.1f}" for variant, (requests, seconds) in pooled.items())


async def direct_upstream(upstream_url: str, requests: int, concurrency: int) -> float:
    """The limit: the fake upstream driven directly by the same load generator."""
    result = await drive(upstream_url, "none", requests, concurrency, os.getpid())
    return result.rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    per_level = "one value, or one per --concurrency"
    parser.add_argument("--requests", type=int, nargs="+", default=[2000], help=f"per measured block: {per_level}")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rounds", type=int, nargs="+", default=[3], help=per_level)
    parser.add_argument(
        "--warmup", type=int, nargs="+", default=[100], help=f"unmeasured requests before each block: {per_level}"
    )
    parser.add_argument("--ready-starts", type=int, default=2, help="extra starts per variant to time readiness")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=sorted(VARIANTS))
    parser.add_argument("--upstream-latency-ms", type=float, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="proxy on core 1, load generator on core 0"
    )
    args = parser.parse_args()
    for name in ("requests", "rounds", "warmup"):  # bad input fails here, before anything starts
        setattr(args, name, per_concurrency(getattr(args, name), args.concurrency, name))

    global PROXY_CPUS
    if args.pin and len(os.sched_getaffinity(0)) >= 2:
        cores = sorted(os.sched_getaffinity(0))
        PROXY_CPUS = {cores[1]}
        os.sched_setaffinity(0, {cores[0]})  # this process, and the fake upstream and PostgreSQL it starts
    db_url, embedded = database()
    if PROXY_CPUS and embedded is None:
        print("note: TEST_DATABASE_URL's server is not ours to pin: it shares the proxy's core", flush=True)
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
        limits = {c: asyncio.run(direct_upstream(upstream_url, 2000, c)) for c in args.concurrency}
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
    if PROXY_CPUS:
        worst = max(r.steal_share for r in results)
        print(f"\nsteal on the proxy's core (the hypervisor's other guests): worst block {worst:.1%} of its time")
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
