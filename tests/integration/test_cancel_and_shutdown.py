"""Cancelled streams and SIGTERM: every request gets its row, reservations come back at once, and a
process told to stop exits within Cloud Run's 10 s even with a long stream in flight.

Through the real proxy and the real openai SDK; the fake upstream's ``[[first_token:MS]]`` keeps a
stream open with no chunk yet (a slow first token), ``[[chunk_ms:MS]]`` makes a long generation.
"""

from __future__ import annotations

import concurrent.futures as futures
import signal
import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from billingproxy import db
from billingproxy.budgets import period_status
from billingproxy.tenants import TenantStore, period_start
from testkit.support import ProxyProcess, budget_of, reservation, test_config, wait_until

MAX_TOKENS = 2000


def stream_body(directives: str) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"tell me a long story {directives}"}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }


def one_request_tenant(database_url: str, body: dict) -> tuple[str, str]:
    """A tenant whose budget pays for one such request at a time, not two: while one reservation is
    held, a second request is refused; once it is released, the second is admitted."""
    bound = reservation(body)
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"cancel-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(bound * Decimal("1.5")))
        return tenant.id, store.create_key(tenant.id)[1]


def rows(database_url: str, tenant_id: str) -> list[dict]:
    with db.connect(database_url) as conn:
        return conn.execute(
            "SELECT request_id, status, error_type, http_status, usage_estimated, prompt_tokens,"
            " completion_tokens, cost_usd, latency_ms, start_time, end_time"
            " FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time",
            (tenant_id,),
        ).fetchall()


@pytest.fixture(scope="module")
def cancel_proxy(tmp_path_factory, upstream, database_url):
    process = ProxyProcess(
        tmp_path_factory.mktemp("cancel"), test_config(upstream.base_url), {"BILLINGPROXY_DATABASE_URL": database_url}
    ).start()
    # A fresh proxy's first request pays LiteLLM's lazy imports (seconds): not what is measured here.
    _, token = one_request_tenant(database_url, stream_body(""))
    warm = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 2}
    response = httpx.post(
        process.url + "/v1/chat/completions", json=warm, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    yield process
    process.stop()


def admitted_within(proxy: ProxyProcess, token: str, body: dict, since: float, deadline_s: float) -> float | None:
    """Seconds from ``since`` until a request needing the whole reservation again is admitted
    (None: not in time), taken when the admitted request was sent. Probes go out every 50 ms, a
    few at once, so a slow refusal does not hide the moment of release; refusals cost nothing,
    and the budget pays for one admitted probe at most."""
    probe = {**body, "stream": False, "messages": [{"role": "user", "content": "probe"}]}
    headers = {"Authorization": f"Bearer {token}"}

    def send(client: httpx.Client) -> float | None:
        sent = time.monotonic()
        response = client.post(proxy.url + "/v1/chat/completions", json=probe, headers=headers)
        assert response.status_code in (200, 429), response.text
        return sent - since if response.status_code == 200 else None

    admitted: list[float] = []
    with httpx.Client(timeout=30) as client, futures.ThreadPoolExecutor(4) as pool:
        running: list[futures.Future] = []
        while not admitted and time.monotonic() - since < deadline_s:
            running.append(pool.submit(send, client))
            done = [f for f in running if f.done()]
            admitted += [f.result() for f in done if f.result() is not None]
            running = [f for f in running if not f.done()]
            time.sleep(0.05)  # the probe interval, not synchronisation: each probe reads the state anew
        admitted += [t for t in (f.result() for f in running) if t is not None]
    return min(admitted) if admitted else None


@pytest.mark.parametrize("when", ["before_headers", "before_first_chunk", "mid_stream"])
def test_a_cancelled_stream_is_recorded_and_its_reservation_released_within_a_second(
    cancel_proxy, upstream, database_url, when
):
    if when == "before_headers":
        body = stream_body("[[latency:4000]]")  # the provider answers nothing for 4 s; the client gives up at 1 s
    elif when == "before_first_chunk":
        body = stream_body("[[first_token:20000]]")  # headers, then no chunk for 20 s
    else:
        body = stream_body("[[chunk_ms:20]]")  # 40 s of chunks: the client reads a few and closes
    tenant_id, token = one_request_tenant(database_url, body)
    client = openai.OpenAI(base_url=cancel_proxy.url + "/v1", api_key=token, max_retries=0)
    calls_before = upstream.calls["/v1/chat/completions"]

    # The budget pays for one: a second concurrent request is refused while the first is held.
    if when != "mid_stream":
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**body, timeout=1.0)
    else:
        stream = client.chat.completions.create(**body, timeout=30)
        relayed = 0
        for chunk in stream:
            relayed += bool(chunk.choices and chunk.choices[0].delta.content)
            if relayed >= 5:
                break
        stream.close()
    cancelled_at = time.monotonic()
    assert upstream.calls["/v1/chat/completions"] == calls_before + 1  # it reached the provider

    released = admitted_within(cancel_proxy, token, body, since=cancelled_at, deadline_s=5)
    assert released is not None, "the cancelled stream's reservation was not released within 5 s"
    print(f"{when}: reservation released {released:.3f} s after the cancel (the admitted probe sent)")
    assert released < 1.0

    def settled() -> list[dict]:
        found = [row for row in rows(database_url, tenant_id) if row["status"] != "rejected"]  # 429s: free
        return found if len(found) == 2 else []

    found = wait_until(settled, timeout=30, what="the cancelled stream's row and the probe's")
    cancelled = [row for row in found if row["status"] == "cancelled"]
    assert len(cancelled) == 1, found
    row = cancelled[0]
    assert row["usage_estimated"] is True
    assert row["prompt_tokens"] > 0
    if when != "mid_stream":
        assert row["completion_tokens"] == 0
    else:
        assert 5 <= row["completion_tokens"] < MAX_TOKENS
    assert row["cost_usd"] > 0
    # The row starts when the request was admitted, not when it was recorded: the client waited
    # 1 s before it gave up (before_headers: LiteLLM's logging object had no start time yet).
    assert row["start_time"] <= row["end_time"]
    if when != "mid_stream":
        assert row["latency_ms"] >= 900, row
    print(f"{when}: {dict(row)}")


def _sigterm_proxy(tmp_path, upstream, database_url, name: str, env: dict[str, str] | None = None) -> ProxyProcess:
    config = test_config(upstream.base_url)
    # A provider slower than the test config's 5 s timeouts: only the shutdown grace cuts it.
    for entry in config["model_list"]:
        if "timeout" in entry["litellm_params"]:
            entry["litellm_params"].update(timeout=60, stream_timeout=60)
    config["router_settings"].update(timeout=60)
    config["litellm_settings"].update(request_timeout=60)
    return ProxyProcess(tmp_path / name, config, {"BILLINGPROXY_DATABASE_URL": database_url, **(env or {})}).start()


@pytest.mark.parametrize("first", [False, True], ids=["long_stream", "first_request"])
def test_sigterm_cuts_what_outlasts_the_grace_records_it_and_exits_within_10_s(tmp_path, upstream, database_url, first):
    """long_stream: a warm proxy relaying a 30 s stream. first_request: the very first request of
    a fresh process (not a stream), its provider silent for 30 s. Either way: exit within 10 s of SIGTERM, and a
    row for the request (``interrupted``, prompt counted, estimated; the stream's relayed tokens)."""
    proxy = _sigterm_proxy(tmp_path, upstream, database_url, "sigterm")
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"sigterm-{uuid.uuid4().hex[:8]}", budget_usd="10")
        token = store.create_key(tenant.id)[1]
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0, timeout=60)
    if not first:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "warm"}], max_tokens=2
        )
    relayed: list[str] = []

    def consume() -> None:
        if first:
            # Not a stream: the provider says nothing for 30 s; no stream wrapper will unwind.
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "first of all [[latency:30000]]"}],
                max_tokens=50,
            )
            return
        stream = client.chat.completions.create(**stream_body("[[chunk_ms:15]]"), timeout=60)
        for chunk in stream:  # 2,000 chunks 15 ms apart: 30 s
            if chunk.choices and chunk.choices[0].delta.content:
                relayed.append(chunk.choices[0].delta.content)

    calls_before = sum(upstream.calls.values())
    with futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(consume)
        wait_until(lambda: sum(upstream.calls.values()) > calls_before, timeout=60, what="the request upstream")
        if not first:
            wait_until(lambda: len(relayed) >= 20, what="the stream under way")
        assert proxy.process is not None
        signalled = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        code = proxy.process.wait(15)
        exited = time.monotonic() - signalled
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            pending.result(timeout=30)  # cut: the client sees the stream end without [DONE]
    print(f"{'first request' if first else '30 s stream'}: exit code {code} {exited:.2f} s after SIGTERM")
    assert exited < 10
    assert code == 0
    found = rows(database_url, tenant.id)
    cut = [row for row in found if row["status"] == "interrupted"]
    assert len(cut) == 1, found
    row = cut[0]
    assert row["usage_estimated"] is True and row["prompt_tokens"] > 0 and row["error_type"] == "shutdown"
    if not first:
        assert 20 <= row["completion_tokens"] < MAX_TOKENS
    print(f"row: {dict(row)}")
    # The exit released the budget lease once the rows were written: nothing held, nothing in doubt.
    with db.connect(database_url) as conn:
        status = period_status(conn, tenant.id, period_start("monthly"), tenant.budget_usd)
        leases = conn.execute("SELECT count(*) AS n FROM budget_leases WHERE tenant_id = %s", (tenant.id,)).fetchone()
    assert leases["n"] == 1 and status["reserved_usd"] == 0 and status["in_doubt_usd"] == 0, status
    assert status["spent_usd"] == sum(r["cost_usd"] for r in found) > 0, (status, found)


def _post(proxy: ProxyProcess, token: str, body: dict) -> int:
    response = httpx.post(
        proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code in (200, 429), response.text
    return response.status_code


@pytest.mark.parametrize("how", ["call-in", "idle", "sigterm"])
def test_a_holder_hands_its_slice_back_so_another_instance_can_use_the_whole_budget(
    tmp_path, upstream, database_url, how
):
    """Instance A serves a little and keeps a slice of the tenant's budget (10 %). A request on B
    needing 95 % of the budget calls A's slice in and is admitted at once (``call-in``, the
    default). With call-in off it is refused while A holds the slice, and admitted once A hands
    it back: after A is idle for 5 s (``idle``), or at once when A gets SIGTERM (``sigterm``),
    without waiting for A's lease to expire."""
    small = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "everything"}], "max_tokens": 10_000}
    need = reservation(big)
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"slices-{uuid.uuid4().hex[:8]}", budget_usd=budget_of(need / Decimal("0.95")))
        token = store.create_key(tenant.id)[1]
    env = {} if how == "call-in" else {"BILLINGPROXY_BUDGET_CALL_IN_MS": "0"}
    a = _sigterm_proxy(tmp_path, upstream, database_url, "a", env)
    b = _sigterm_proxy(tmp_path, upstream, database_url, "b", env)
    try:
        for _ in range(3):
            assert _post(a, token, small) == 200  # A now holds a slice: 10 % of the budget
        if how == "call-in":
            # A listens for call-ins from its first budgeted request on (B has none yet).
            wait_until(lambda: _budget_listeners(database_url) == 1, timeout=10, what="A's call-in listener")
            assert _post(b, token, small) == 200  # B warm (its own slice does not count against it)
            started = time.monotonic()
            assert _post(b, token, big) == 200
            print(f"call-in: the request needing 95 % of the budget was admitted in {time.monotonic() - started:.3f} s")
        else:
            _a_hands_back_in_time(a, b, token, big, how)
    finally:
        a.stop()
        b.stop()
    with db.connect(database_url) as conn:
        spent = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS spent FROM litellm_usage WHERE tenant_id = %s", (tenant.id,)
        ).fetchone()["spent"]
    assert spent <= tenant.budget_usd


def _budget_listeners(database_url: str) -> int:
    with db.connect(database_url) as conn:
        return conn.execute(
            """SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = 'billingproxy-budget' AND query LIKE 'LISTEN%%'"""
        ).fetchone()["n"]


def _a_hands_back_in_time(a: ProxyProcess, b: ProxyProcess, token: str, big: dict, how: str) -> None:
    """Call-in off: B is refused while A holds its slice, and admitted once A hands it back."""
    assert _post(b, token, big) == 429  # A's slice is in the way
    started = time.monotonic()
    if how == "sigterm":  # well before A's idle hand-back (5 s) and its lease's expiry (10 s)
        assert a.process is not None
        a.process.send_signal(signal.SIGTERM)
    waited = None
    while waited is None and time.monotonic() - started < 20:
        attempt = time.monotonic()
        if _post(b, token, big) == 200:
            waited = attempt - started  # when the admitted request was sent, not answered
        else:
            time.sleep(0.1)  # a poll interval; the loop checks the budget again
    print(f"{how}: the request needing 95 % of the budget was admitted on B {waited} s later")
    assert waited is not None, "never admitted"
    # idle: 5 s without a reservation, then the next flush (1 s); sigterm: the hand-back at once.
    assert waited < (8 if how == "idle" else 2)
    if how == "sigterm":
        assert a.process.wait(15) == 0
