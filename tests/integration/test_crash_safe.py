"""Crash-safe metering: a proxy SIGKILLed under load loses no answered request, because the record
(the JSON line on stdout, then the queued row) is made before the response leaves the proxy."""

from __future__ import annotations

import concurrent.futures as futures
import json
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import pytest
from click.testing import CliRunner

from billingproxy import db
from billingproxy.cli import main as cli
from testkit.support import ProxyProcess, budget_of, reservation, tenant_with_token, test_config, wait_until

ROUNDS = 3  # three instances, each SIGKILLed mid-burst


def start_proxy(tmp_path: Path, upstream, url: str, name: str, **env: str) -> ProxyProcess:
    return ProxyProcess(
        tmp_path / name,
        test_config(upstream.base_url),
        # Rows stay queued in memory: whatever survives the kill survives through stdout alone.
        {"BILLINGPROXY_DATABASE_URL": url, "BILLINGPROXY_WRITER_INTERVAL_MS": "60000", **env},
    ).start()


def request_body(i: int) -> dict:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"crash test {i} [[latency:{20 + i % 5 * 20}]]"}],
        "max_tokens": 3,
    }
    if i % 2:
        body["stream"] = True
    return body


def one(client: httpx.Client, proxy: ProxyProcess, token: str, i: int) -> str | None:
    """The call id of a request the client saw answered in full, else None."""
    body = request_body(i)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with client.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers) as r:
            text = r.read().decode()
            if r.status_code != 200:
                return None
            if body.get("stream") and "[DONE]" not in text:
                return None
            return r.headers.get("x-litellm-call-id")
    except httpx.TransportError:
        return None  # cut off by the kill: nothing was promised


def usage_ids(url: str, tenant_id: str) -> list[str]:
    with db.connect(url) as conn:
        rows = conn.execute("SELECT request_id FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)).fetchall()
    return [row["request_id"] for row in rows]


def request_lines(path: Path, tenant_id: str) -> list[dict]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if '"litellm_request"' not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line torn by the kill
        if line.get("tenant_id") == tenant_id:
            lines.append(line)
    return lines


def burst_then_sigkill(client: httpx.Client, proxy: ProxyProcess, token: str) -> list[str | None]:
    """150 requests, 12 at a time; SIGKILL once 40 are done. Each request's ``one`` result."""
    with futures.ThreadPoolExecutor(12) as pool:
        pending = [pool.submit(one, client, proxy, token, i) for i in range(150)]
        wait_until(lambda: sum(f.done() for f in pending) >= 40, timeout=90, what="burst under way")
        assert proxy.process is not None
        os.killpg(proxy.process.pid, signal.SIGKILL)  # an OOM kill: no handler, no drain
        proxy.process.wait(10)
        return [f.result() for f in pending]


def exported(logs: list[Path]) -> list[str]:
    """The JSON lines of each stdout, as Cloud Logging keeps them (LiteLLM's banner is not JSON)."""
    exports = []
    for path in logs:
        export = path.with_suffix(".jsonl")
        export.write_text(
            "".join(raw + "\n" for raw in path.read_text(errors="replace").splitlines() if raw[:1] == "{")
        )
        exports.append(str(export))
    return exports


@pytest.mark.timeout(900)
def test_sigkill_under_load_loses_no_answered_request_nor_provider_call(tmp_path, upstream, database_url):
    tenant_id, token = tenant_with_token(database_url, "crash")
    answered: list[str] = []
    logs: list[Path] = []
    since = datetime.now(UTC)
    provider_calls = 0
    client = httpx.Client(timeout=30)  # one client: building an SSL context per request costs more than the request
    for round_ in range(ROUNDS):
        proxy = start_proxy(tmp_path, upstream, database_url, f"p{round_}")
        logs.append(proxy.stdout_path)
        calls_before = sum(upstream.calls.values())
        try:
            done = burst_then_sigkill(client, proxy, token)
        finally:
            proxy.stop()
        provider_calls += sum(upstream.calls.values()) - calls_before
        answered += [call_id for call_id in done if call_id]
        assert sum(1 for call_id in done if call_id) >= 40
    assert usage_ids(database_url, tenant_id) == []  # nothing was written before the kills

    # Every answered request has exactly one request line, whatever the kill cut.
    lines = [line for path in logs for line in request_lines(path, tenant_id)]
    per_id = Counter(line["request_id"] for line in lines)
    assert not [i for i, n in per_id.items() if n > 1], "a request was logged twice"
    missing = set(answered) - set(per_id)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no line"

    # `usage replay` of the killed instances' stdout restores them, once.
    exports = exported(logs)
    CliRunner().invoke(cli, ["usage", "replay", *exports, "--json"], env={"DATABASE_URL": database_url})
    ids = usage_ids(database_url, tenant_id)
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert set(answered) <= set(ids), "an answered request has no row after replay"
    # `usage audit`: admitted requests with no completion (killed mid-call) become `interrupted`.
    until = datetime.now(UTC) + timedelta(seconds=1)
    window = ["--since", f"{since:%Y-%m-%dT%H:%M:%S}", "--until", f"{until:%Y-%m-%dT%H:%M:%S}"]
    audit_args = ["usage", "audit", *exports, *window, "--json"]
    result = CliRunner().invoke(
        cli,
        audit_args,
        env={"DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    audit = json.loads(result.output)
    ids = usage_ids(database_url, tenant_id)
    assert len(ids) == len(set(ids)), "duplicate rows after audit"
    # Every call that reached the provider has a row; an interrupted row may also stand for a call
    # killed between admission and the provider (the fake counts a call when it arrives).
    assert provider_calls <= len(ids) <= provider_calls + audit["interrupted"], (provider_calls, len(ids), audit)
    again = CliRunner().invoke(
        cli,
        audit_args,
        env={"DATABASE_URL": database_url},
    )
    assert json.loads(again.output)["interrupted"] == 0  # idempotent
    with db.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT usage_estimated, cost_usd FROM litellm_usage WHERE tenant_id = %s AND status = 'interrupted'",
            (tenant_id,),
        ).fetchall()
    assert all(row["usage_estimated"] and row["cost_usd"] > 0 for row in rows)
    print(f"answered {len(answered)}, provider calls {provider_calls}, rows {len(ids)}, audit {audit}")
    streamed = [line for line in lines if line["request_id"] in set(answered) and line["stream"]]
    assert streamed and all(line["status"] == "success" and line["completion_tokens"] == 3 for line in streamed)


def test_a_stream_the_client_closes_early_is_recorded_once_and_says_whose_counts(tmp_path, upstream, database_url):
    """A stream the client hangs up on is never a `success` with an unflagged local estimate."""
    tenant_id, token = tenant_with_token(database_url, "cancel")
    proxy = ProxyProcess(
        tmp_path / "cancel", test_config(upstream.base_url), {"BILLINGPROXY_DATABASE_URL": database_url}
    )
    proxy.start()
    try:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "tell me a long story"}],
            "max_tokens": 3000,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            call_id = r.headers["x-litellm-call-id"]
            for n, _ in enumerate(r.iter_lines()):
                if n >= 20:
                    break

        def row():
            with db.connect(database_url) as conn:
                return conn.execute(
                    "SELECT status, usage_estimated, prompt_tokens, completion_tokens FROM litellm_usage"
                    " WHERE request_id = %s",
                    (call_id,),
                ).fetchone()

        found = wait_until(row, timeout=30, what="the row of the stream the client closed")
        # Cut before its end: `cancelled` (`success` only if the relay finished before the hang-up
        # was noticed). The counts say where they came from: the provider's when its usage chunk
        # had arrived, else ours, flagged.
        assert found["status"] in ("cancelled", "success")
        assert found["prompt_tokens"] > 0
        if found["usage_estimated"]:
            # Counted from what was relayed, never more than the provider could bill (max_tokens).
            assert found["status"] == "cancelled" and 0 < found["completion_tokens"] <= 3000
        else:
            assert (found["prompt_tokens"], found["completion_tokens"]) == (5, 3000)  # the provider's numbers
        print(f"closed stream recorded as {dict(found)}")
    finally:
        proxy.stop()
    assert [line["request_id"] for line in request_lines(proxy.stdout_path, tenant_id)] == [call_id]


def test_sigterm_with_the_first_request_in_flight_writes_its_row(tmp_path, upstream, database_url):
    """The SIGTERM handler is installed at start, not when the writer first starts: the very first
    request of a fresh process, in flight at SIGTERM, is answered and its row is written at exit."""
    tenant_id, token = tenant_with_token(database_url, "first")
    proxy = ProxyProcess(
        tmp_path / "first", test_config(upstream.base_url), {"BILLINGPROXY_DATABASE_URL": database_url}
    )
    proxy.start()
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "first [[latency:1500]]"}],
        "max_tokens": 2,
    }
    calls_before = sum(upstream.calls.values())
    try:
        with futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post,
                proxy.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            wait_until(lambda: sum(upstream.calls.values()) > calls_before, what="the first request upstream")
            assert proxy.process is not None
            proxy.process.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200
        assert proxy.process.wait(10) == 0
    finally:
        proxy.stop()
    assert usage_ids(database_url, tenant_id) == [response.headers["x-litellm-call-id"]]


def test_an_anthropic_messages_stream_is_recorded_before_it_ends_and_a_cut_one_counts_what_was_relayed(
    tmp_path, upstream, database_url
):
    """/v1/messages relays Anthropic's own events: the record comes from message_start and
    message_delta before the stream's last bytes leave (so a SIGKILL right after the client has
    read it loses nothing), and a stream the client closes counts the text deltas it was sent."""
    tenant_id, token = tenant_with_token(database_url, "anthropic-stream")
    proxy = start_proxy(tmp_path, upstream, database_url, "anthropic")
    client = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    try:
        text = "tell me a long story [[chunk_ms:20]]"
        with client.messages.stream(
            model="claude-sonnet-4", max_tokens=2000, messages=[{"role": "user", "content": text}]
        ) as stream:
            deltas = 0
            for event in stream:
                deltas += event.type == "content_block_delta"
                if deltas >= 5:
                    break
        cut = wait_until(
            lambda: [line for line in request_lines(proxy.stdout_path, tenant_id) if line["status"] == "cancelled"],
            timeout=15,
            what="the cut stream's request line",
        )[0]
        assert cut["usage_estimated"] is True and 5 <= cut["completion_tokens"] < 2000, cut

        with client.messages.stream(
            model="claude-sonnet-4", max_tokens=7, messages=[{"role": "user", "content": "three words here"}]
        ) as stream:
            final = stream.get_final_message()
        os.killpg(proxy.process.pid, signal.SIGKILL)  # at once: LiteLLM's logging worker gets no time
        proxy.process.wait(10)
        finished = [line for line in request_lines(proxy.stdout_path, tenant_id) if line["status"] == "success"]
        assert len(finished) == 1, finished
        line = finished[0]
        assert line["usage_estimated"] is False and line["stream"] is True
        assert (
            (line["prompt_tokens"], line["completion_tokens"])
            == (3, 7)
            == (
                final.usage.input_tokens,
                final.usage.output_tokens,
            )
        )
    finally:
        proxy.stop()


def live_leases(url: str, tenant_id: str) -> int:
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) AS n FROM budget_leases WHERE tenant_id = %s AND expires_at > now()", (tenant_id,)
        ).fetchone()["n"]


def ledger_spend(url: str, tenant_id: str) -> Decimal:
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS c FROM litellm_usage WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()["c"]


@pytest.mark.timeout(900)
def test_sigkill_of_budgeted_instances_keeps_spend_within_the_budget_and_the_audit_frees_the_rest(
    tmp_path, upstream, database_url
):
    """Three instances SIGKILLed in turn under load against one budget, each with its rows still
    queued (so its spend reaches the ledger only through `usage replay`). After each kill its lease
    expires; what it held stays in doubt, so the next instance is not granted it again. After
    replay and audit: spend <= budget; the audit releases the doubt, and a restarted instance
    spends the rest of the budget at once (to within one request's reservation)."""
    most = max(reservation(request_body(i)) for i in range(10))
    # A request costs ~0.4 of its reservation, and a burst answers >= 30 before its kill: without
    # the doubt every round would see an empty ledger and spend ~12 reservations, ~2x this budget.
    budget = budget_of(most * 20)
    tenant_id, token = tenant_with_token(database_url, "crashbudget", budget_usd=budget)
    logs: list[Path] = []
    since = datetime.now(UTC)
    client = httpx.Client(timeout=30)
    answered = 0
    for round_ in range(ROUNDS):
        proxy = start_proxy(tmp_path, upstream, database_url, f"b{round_}")
        logs.append(proxy.stdout_path)
        try:
            answered += sum(1 for call_id in burst_then_sigkill(client, proxy, token) if call_id)
        finally:
            proxy.stop()
        # Its lease expires unrenewed (10 s): from then on only the doubt keeps its spend counted.
        wait_until(lambda: live_leases(database_url, tenant_id) == 0, timeout=30, what="the dead lease's expiry")
    assert ledger_spend(database_url, tenant_id) == 0  # nothing was written before the kills

    exports = exported(logs)
    env = {"DATABASE_URL": database_url}
    CliRunner().invoke(cli, ["usage", "replay", *exports, "--json"], env=env)
    until = datetime.now(UTC) + timedelta(seconds=1)
    window = ["--since", f"{since:%Y-%m-%dT%H:%M:%S}", "--until", f"{until:%Y-%m-%dT%H:%M:%S}"]
    result = CliRunner().invoke(cli, ["usage", "audit", *exports, *window, "--json"], env=env)
    assert result.exit_code == 0, result.output
    audit = json.loads(result.output)
    # Each killed instance that held part of the budget: its lease's doubt, now released.
    assert audit["budget_doubt_released"] >= 1, audit
    with db.connect(database_url) as conn:
        held = conn.execute("SELECT count(*) AS n FROM budget_leases WHERE tenant_id = %s AND amount > 0", (tenant_id,))
        assert held.fetchone()["n"] == 0
    spent = ledger_spend(database_url, tenant_id)
    assert 0 < spent <= budget, (spent, budget)

    # Restarted: the budget the ledger leaves is spendable at once, and not a request more.
    proxy = start_proxy(tmp_path, upstream, database_url, "restarted", BILLINGPROXY_WRITER_INTERVAL_MS="50")
    try:
        statuses = []
        started = time.monotonic()
        while not statuses or statuses[-1] == 200:
            body = request_body(0)
            response = client.post(
                proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(response.status_code)
            assert len(statuses) < 200, "the budget never ran out"
        took = time.monotonic() - started
    finally:
        proxy.stop()
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    final = wait_until(
        lambda: (c := ledger_spend(database_url, tenant_id)) > spent and c, timeout=30, what="the restarted rows"
    )
    print(f"answered {answered} before the kills; spent {spent} of {budget} after replay and audit {audit}; "
          f"restarted: {statuses.count(200)} more in {took:.1f} s, spent {final}")  # fmt: skip
    assert budget - most <= final <= budget, (final, budget, most)
