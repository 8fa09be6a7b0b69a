"""Nothing billable is lost: database outages delay rows, SIGTERM flushes or spills them."""

from __future__ import annotations

import concurrent.futures as futures
import signal
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from billingproxy import db
from testkit.billing import drain, expected_micro_usd, make_relay
from testkit.support import ProxyProcess, dockerfile_final_stage, tenant_with_token, test_config, wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count these words"}], "max_tokens": 3}


def start_proxy(tmp_path: Path, upstream, url: str, **env: str) -> ProxyProcess:
    return ProxyProcess(
        tmp_path / "proxy",
        test_config(upstream.base_url),
        {"BILLINGPROXY_DATABASE_URL": url, "BILLINGPROXY_AUTH_CACHE_TTL": "1", **env},
    ).start()


def usage_ids(url: str, tenant_id: str) -> list[str]:
    with db.connect(url) as conn:
        rows = conn.execute("SELECT request_id FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)).fetchall()
    return [row["request_id"] for row in rows]


def upstream_calls(upstream) -> int:
    return sum(upstream.calls.values())


def chat(proxy: ProxyProcess, token: str) -> httpx.Response:
    return httpx.post(
        proxy.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_database_outage_keeps_warm_keys_working_and_loses_no_rows(tmp_path, upstream, private_pg, private_db):
    tenant_id, token = tenant_with_token(private_db, "dur")
    proxy = start_proxy(tmp_path, upstream, private_db)
    try:
        served = [chat(proxy, token).headers["x-litellm-call-id"] for _ in range(5)]
        wait_until(lambda: len(usage_ids(private_db, tenant_id)) == 5, what="rows before the outage")

        private_pg.stop()
        # The key is warm: it keeps working although its cache entry is older than the 1 s TTL.
        for _ in range(20):
            response = chat(proxy, token)
            assert response.status_code == 200, response.text
            served.append(response.headers["x-litellm-call-id"])
        unknown = chat(proxy, "sk-bp-never-issued-" + "z" * 30)
        assert unknown.status_code == 503, unknown.text  # fail closed
        assert unknown.json()["error"]["code"] == "auth_unavailable"

        private_pg.start()
        wait_until(lambda: len(usage_ids(private_db, tenant_id)) == 25, timeout=60, what="rows after the outage")
        ids = usage_ids(private_db, tenant_id)
        assert sorted(ids) == sorted(served)  # every served request, none twice
    finally:
        proxy.stop()


def test_sigterm_during_a_burst_keeps_every_row_in_the_database_or_a_spill_file(
    request, monkeypatch, tmp_path, upstream, private_pg, private_db, fake_stripe
):
    """SIGTERM mid-burst with the database gone: every request that reached the provider is
    billed once (database or spill file), and Stripe ends up with exactly the database's sum."""
    from billingproxy.metering import replay_files

    customer = f"cus_{uuid.uuid4().hex[:14]}"
    tenant_id, token = tenant_with_token(private_db, "dur", stripe_customer_id=customer)
    proxy = start_proxy(
        tmp_path, upstream, private_db, BILLINGPROXY_WRITER_INTERVAL_MS="2000", BILLINGPROXY_BILLING_WINDOW_S="1"
    )
    request.addfinalizer(proxy.stop)
    chat(proxy, token)  # warm the key and the writer
    upstream_before = upstream_calls(upstream)
    served: list[str] = []

    def one() -> str | None:
        try:
            response = chat(proxy, token)
        except httpx.TransportError:
            return None  # cut off by the shutdown: no response, nothing was promised
        return response.headers.get("x-litellm-call-id") if response.status_code == 200 else None

    with futures.ThreadPoolExecutor(16) as pool:
        pending = [pool.submit(one) for _ in range(300)]
        wait_until(lambda: sum(f.done() for f in pending) >= 60, timeout=60, what="burst under way")
        private_pg.stop()  # worst case: the database is gone when the instance is told to stop
        exit_code = proxy.terminate(timeout=30)
        served = [f.result() for f in pending if f.result()]
    assert exit_code == 0
    assert len(served) >= 60
    reached_upstream = upstream_calls(upstream) - upstream_before

    spill_dir = Path(proxy.env.get("BILLINGPROXY_SPILL_DIR", proxy.workdir / f"spill-{proxy.port}"))
    spill_files = sorted(spill_dir.glob("usage-*.jsonl"))
    assert spill_files, "rows that could not be written must be spilled"
    private_pg.start()
    monkeypatch.setenv("BILLINGPROXY_BILLING_WINDOW_S", "1")  # replay accrues in the proxy's windows
    read, inserted = replay_files(private_db, spill_files)
    assert read >= inserted > 0
    ids = usage_ids(private_db, tenant_id)
    assert len(ids) == len(set(ids))
    assert set(served) <= set(ids)  # every answered request is billed
    assert len(ids) == reached_upstream + 1  # usage rows == requests that reached the provider (+ the warm-up)
    # Replaying again changes nothing.
    assert replay_files(private_db, spill_files) == (read, 0)

    drain(make_relay(private_db, fake_stripe), private_db)
    with db.connect(private_db) as conn:
        assert fake_stripe.totals()[customer] == expected_micro_usd(conn, tenant_id) > 0
    assert fake_stripe.duplicate_identifiers == 0


@pytest.mark.parametrize("workers", ["1", "2"])  # NUM_WORKERS: each worker process flushes its own queue
def test_sigterm_with_the_database_up_writes_every_row_before_exit(tmp_path, upstream, private_db, workers):
    tenant_id, token = tenant_with_token(private_db, "dur")
    image_env, _ = dockerfile_final_stage()  # the worker health-check timeout the image runs with
    # A long flush interval: rows are still queued in memory when SIGTERM arrives.
    proxy = start_proxy(
        tmp_path,
        upstream,
        private_db,
        BILLINGPROXY_WRITER_INTERVAL_MS="60000",
        NUM_WORKERS=workers,
        TIMEOUT_WORKER_HEALTHCHECK=image_env["TIMEOUT_WORKER_HEALTHCHECK"],
    )
    try:
        served = [chat(proxy, token).headers["x-litellm-call-id"] for _ in range(30)]
        assert usage_ids(private_db, tenant_id) == []  # nothing written yet
        assert proxy.process is not None
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        # Cloud Run sends SIGKILL 10 s after SIGTERM: every row must be in the database by then.
        wait_until(lambda: len(usage_ids(private_db, tenant_id)) == len(served), timeout=10, what="rows after SIGTERM")
        # What comes after the rows (the supervisor's own exit) may outlive the grace: a SIGKILL
        # then costs nothing. The exit is still clean, and its time is in the log for the record.
        assert proxy.process.wait(30) == 0
        print(f"rows written and the proxy exited {time.monotonic() - started:.1f} s after SIGTERM")
    finally:
        proxy.stop()
    assert sorted(usage_ids(private_db, tenant_id)) == sorted(served)
    assert not list(Path(proxy.workdir / f"spill-{proxy.port}").glob("usage-*.jsonl"))
    # A worker uvicorn judged hung (no ping answer in time) is killed and restarted: none may be.
    assert "died" not in proxy.output(), "a worker was killed and restarted"


def test_a_stalled_database_delays_rows_but_not_requests(tmp_path, upstream, private_db):
    """The usage table is locked (a database that stalls rather than fails): requests are still
    answered, the writer waits, and once the lock goes every row lands exactly once."""
    tenant_id, token = tenant_with_token(private_db, "dur")
    proxy = start_proxy(tmp_path, upstream, private_db, BILLINGPROXY_WRITER_INTERVAL_MS="100")
    try:
        served = [chat(proxy, token).headers["x-litellm-call-id"]]
        wait_until(lambda: len(usage_ids(private_db, tenant_id)) == 1, what="the first row")
        with psycopg.connect(private_db) as blocker:  # one transaction, held until the block ends
            blocker.execute("LOCK TABLE litellm_usage IN ACCESS EXCLUSIVE MODE")
            for _ in range(20):
                response = chat(proxy, token)
                assert response.status_code == 200, response.text
                served.append(response.headers["x-litellm-call-id"])

            def writer_waits() -> bool:
                return blocker.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0

            wait_until(writer_waits, what="the writer to wait on the lock")
            stored = blocker.execute("SELECT count(*) FROM litellm_usage WHERE tenant_id = %s", (tenant_id,))
            assert stored.fetchone()[0] == 1  # nothing written while the database stalls
        wait_until(lambda: len(usage_ids(private_db, tenant_id)) == 21, timeout=60, what="rows after the stall")
        assert sorted(usage_ids(private_db, tenant_id)) == sorted(served)
    finally:
        proxy.stop()
