"""The price book through real proxies: dated versions switch every instance at the effective
instant (priced by the request's start time), Anthropic cache writes and long-context tiers are
billed at their own prices, unpriced models are refused, and the CLI / admin API manage it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billingproxy import db
from billingproxy.cli import main as cli
from billingproxy.metering import prompt_token_bound
from billingproxy.service import create_app
from testkit.billing import drain, expected_micro_usd, make_relay
from testkit.fakes.stripe_api import FakeStripe
from testkit.fakes.upstream import FakeUpstream
from testkit.support import (
    MASTER_KEY,
    ProxyProcess,
    budget_of,
    create_migrated_database,
    drop_database,
    tenant_with_token,
    test_config,
    wait_until,
)

MTOK = Decimal(1_000_000)
UNPRICED = "unpriced-model"  # in the proxies' config.yaml, never in the price book


@pytest.fixture(scope="module")
def book_db(pg_server: str) -> Iterator[str]:
    url = create_migrated_database(pg_server)  # schema + config.yaml's prices, as `db migrate`
    yield url
    drop_database(pg_server, url)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, upstream: FakeUpstream, book_db: str) -> Iterator[list[ProxyProcess]]:
    """Two instances on one database, as behind a load balancer."""
    config = test_config(upstream.base_url)
    config["model_list"].append(
        {
            "model_name": UNPRICED,
            "litellm_params": {"model": "openai/" + UNPRICED, "api_base": upstream.base_url + "/v1", "api_key": "x"},
            "model_info": {"mode": "chat", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
        }
    )
    env = {
        "BILLINGPROXY_DATABASE_URL": book_db,
        "BILLINGPROXY_AUTH_CACHE_TTL": "1",
        "BILLINGPROXY_PRICES_POLL_S": "30",
        "BILLINGPROXY_BILLING_WINDOW_S": "1",  # short billing windows: the relay seals at once
    }
    workdir = tmp_path_factory.mktemp("price-book")
    started = [ProxyProcess(workdir, config, env).start(), ProxyProcess(workdir, config, env).start()]
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def run_cli(book_db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", book_db)

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, list(args))
        if ok:
            assert result.exit_code == 0, result.output
            return json.loads(result.output) if "--json" in args else result.output
        assert result.exit_code == 1, result.output
        return result.output

    return invoke


def rows_of(url: str, tenant_id: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT * FROM litellm_usage WHERE tenant_id = %s ORDER BY start_time", (tenant_id,)
        ).fetchall()


def wait_rows(url: str, tenant_id: str, count: int) -> list[dict]:
    return wait_until(
        lambda: (rows := rows_of(url, tenant_id)) and len(rows) >= count and rows,
        timeout=60,
        what=f"{count} usage rows",
    )


def windows_closed(rows: list[dict]) -> None:
    """The relay seals only closed billing windows (1 s here, no grace): wait until the last row's is."""
    last = max(r["start_time"] for r in rows)
    wait_until(lambda: datetime.now(UTC) > last + timedelta(seconds=2), what="the rows' billing windows to close")


def client(proxy: ProxyProcess, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)


def chat(proxy: ProxyProcess, token: str, model: str, words: int, max_tokens: int, extra: str = "", **kw) -> None:
    text = " ".join(["w"] * (words - len(extra.split()))) + (" " + extra if extra else "")
    oa = client(proxy, token)
    if kw.get("stream"):
        with oa.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, stream=True
        ) as stream:
            for _ in stream:
                pass
    else:
        oa.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens)


def test_db_migrate_imports_config_prices_once_and_again_only_when_they_change(pg_server, tmp_path, monkeypatch):
    url = create_migrated_database(pg_server)
    try:
        monkeypatch.setenv("DATABASE_URL", url)
        first = CliRunner().invoke(cli, ["prices", "history", "claude-sonnet-4", "--json"])
        (version,) = json.loads(first.output)
        # USD per token in config.yaml → per million tokens, exact; cache writes at the defaults.
        assert (version["input_per_mtok"], version["output_per_mtok"], version["cached_read_per_mtok"]) == (
            "3",
            "15",
            "0.3",
        )
        assert (version["cache_write_5m_per_mtok"], version["cache_write_1h_per_mtok"]) == ("3.75", "6")
        again = CliRunner().invoke(cli, ["db", "migrate", "--json"])
        assert again.exit_code == 0 and json.loads(again.output)["imported_prices"] == []
        changed = Path(tmp_path / "config.yaml")
        text = (Path(__file__).parents[2] / "config.yaml").read_text()
        changed.write_text(text.replace("input_cost_per_token: 0.000003\n", "input_cost_per_token: 0.0000035\n"))
        monkeypatch.setenv("BILLINGPROXY_CONFIG", str(changed))
        third = json.loads(CliRunner().invoke(cli, ["db", "migrate", "--json"]).output)["imported_prices"]
        assert [(v["model"], v["input_per_mtok"]) for v in third] == [("claude-sonnet-4", "3.5")]
        history = json.loads(CliRunner().invoke(cli, ["prices", "history", "claude-sonnet-4", "--json"]).output)
        assert [v["input_per_mtok"] for v in history] == ["3", "3.5"]  # never overwritten
    finally:
        drop_database(pg_server, url)


def test_a_change_scheduled_5s_ahead_switches_both_instances_at_the_instant(proxies, book_db, run_cli):
    tenant_id, token = tenant_with_token(book_db, "switch")
    model = "gpt-4o-mini"
    for proxy in proxies:  # warm: each instance's follower is listening
        chat(proxy, token, model, 3, 2)
    (old,) = [r for r in run_cli("prices", "list", "--model", model, "--json")]
    effective = datetime.now(UTC) + timedelta(seconds=5)
    new = run_cli(
        "prices", "set", model, "--input-per-mtok", "0.4", "--output-per-mtok", "1.6",
        "--effective-at", effective.isoformat(), "--reason", "provider price change", "--json",
    )  # fmt: skip
    assert new["id"] != old["id"] and new["input_per_mtok"] == "0.4"
    sent = 2
    deadline = effective + timedelta(seconds=2)
    while datetime.now(UTC) < deadline:
        for proxy in proxies:
            chat(proxy, token, model, 5, 3)
            sent += 1
    rows = wait_rows(book_db, tenant_id, sent)
    prices = {
        old["id"]: (Decimal(old["input_per_mtok"]), Decimal(old["output_per_mtok"])),
        new["id"]: (Decimal("0.4"), Decimal("1.6")),
    }
    before = after = 0
    for row in rows:
        expected = new["id"] if row["start_time"] >= effective else old["id"]
        assert row["price_version_id"] == expected, (row["start_time"], effective)
        price_in, price_out = prices[expected]
        assert row["cost_usd"] == (row["prompt_tokens"] * price_in + row["completion_tokens"] * price_out) / MTOK
        before += expected == old["id"]
        after += expected == new["id"]
    assert before >= 4 and after >= 4  # both sides of the instant, on both instances
    assert {r["start_time"] >= effective for r in rows} == {True, False}


def test_anthropic_cache_writes_are_billed_at_their_own_price_stream_and_not(proxies, book_db):
    tenant_id, token = tenant_with_token(book_db, "cache")
    # claude-sonnet-4 from config.yaml: input 3, output 15, cached read 0.3, writes 3.75 (5 m) / 6 (1 h)
    extra = "[[cache_write:6]] [[cache_write_1h:4]] [[cached:3]]"
    chat(proxies[0], token, "claude-sonnet-4", 20, 5, extra)
    chat(proxies[1], token, "claude-sonnet-4", 20, 5, extra, stream=True)
    # Anthropic's own route too (its usage counts input_tokens without the cache reads and writes;
    # the non-streaming answer is recorded before it leaves the proxy, from that shape).
    an = anthropic.Anthropic(base_url=proxies[0].url, api_key=token, max_retries=0)
    text = " ".join(["w"] * (20 - len(extra.split()))) + " " + extra
    an.messages.create(model="claude-sonnet-4", max_tokens=5, messages=[{"role": "user", "content": text}])
    with an.messages.stream(
        model="claude-sonnet-4", max_tokens=5, messages=[{"role": "user", "content": text}]
    ) as stream:
        stream.until_done()
    rows = wait_rows(book_db, tenant_id, 4)
    expected = (Decimal(7) * 3 + 3 * Decimal("0.3") + 6 * Decimal("3.75") + 4 * 6 + 5 * 15) / MTOK
    assert sorted((r["stream"], r["prompt_tokens"], r["cached_tokens"], r["cost_usd"]) for r in rows) == [
        (False, 20, 3, expected),
        (False, 20, 3, expected),
        (True, 20, 3, expected),
        (True, 20, 3, expected),
    ]
    # Billed at the plain input price, the 10 cache-write tokens would have cost 16.5 µ$ less than they do.
    assert expected - (Decimal(17) * 3 + 3 * Decimal("0.3") + 5 * 15) / MTOK == Decimal("0.0000165")


def test_audio_tokens_are_billed_at_their_own_price_stream_and_not(proxies, book_db, run_cli):
    tenant_id, token = tenant_with_token(book_db, "audio")
    model = "gpt-4o-audio-preview"  # config.yaml: input 2.5, output 10, audio in 40, audio out 80 per Mtok
    (listed,) = run_cli("prices", "list", "--model", model, "--json")
    assert (listed["input_audio_per_mtok"], listed["output_audio_per_mtok"]) == ("40", "80")
    assert listed["input_image_per_mtok"] is None
    chat(proxies[0], token, model, 20, 5, "[[audio_in:7]] [[audio_out:3]]")
    chat(proxies[1], token, model, 20, 5, "[[audio_in:7]] [[audio_out:3]]", stream=True)
    rows = wait_rows(book_db, tenant_id, 2)
    expected = (20 * Decimal("2.5") + 7 * 40 + 2 * 10 + 3 * 80) / MTOK
    assert sorted(
        (r["stream"], r["prompt_tokens"], r["input_audio_tokens"], r["output_audio_tokens"], r["cost_usd"])
        for r in rows
    ) == [(False, 27, 7, 3, expected), (True, 27, 7, 3, expected)]
    assert {r["price_version_id"] for r in rows} == {listed["id"]}
    # A re-rate prices the audio tokens again from the rows: nothing to change.
    period = [(rows[0]["start_time"] - timedelta(seconds=1)).isoformat(), datetime.now(UTC).isoformat()]
    dry = run_cli("prices", "rerate", "--tenant", tenant_id, "--from", period[0], "--to", period[1], "--json")
    assert [(m["model"], m["rows"], m["changed"]) for m in dry["models"]] == [(model, 2, 0)]
    # A rate card may fix the audio prices alone: the text prices stay the list's.
    carded_id, carded_token = tenant_with_token(book_db, "audio-card")
    start = datetime.now(UTC) + timedelta(seconds=2)
    card = run_cli(
        "ratecard", "set", carded_id, model, "--input-audio-per-mtok", "20", "--output-audio-per-mtok", "50.5",
        "--from", start.isoformat(), "--json",
    )  # fmt: skip
    assert (card["input_audio_per_mtok"], card["output_audio_per_mtok"], card["input_per_mtok"]) == ("20", "50.5", None)
    wait_until(lambda: datetime.now(UTC) > start, what="the rate card's start")
    chat(proxies[0], carded_token, model, 20, 5, "[[audio_in:7]] [[audio_out:3]]")
    (carded,) = wait_rows(book_db, carded_id, 1)
    assert carded["cost_usd"] == (20 * Decimal("2.5") + 7 * 20 + 2 * 10 + 3 * Decimal("50.5")) / MTOK


def test_image_tokens_are_billed_at_their_own_price_where_the_payload_reports_them(proxies, book_db, run_cli):
    tenant_id, token = tenant_with_token(book_db, "image")
    model = "gemini-2.0-flash"
    version = run_cli(
        "prices", "set", model, "--input-per-mtok", "0.1", "--output-per-mtok", "0.4",
        "--input-image-per-mtok", "0.25", "--reason", "image tokens priced apart",
        "--effective-at", (effective := datetime.now(UTC) + timedelta(seconds=2)).isoformat(), "--json",
    )  # fmt: skip
    assert version["input_image_per_mtok"] == "0.25" and version["input_audio_per_mtok"] is None
    wait_until(lambda: datetime.now(UTC) > effective, what="the effective instant")
    image = {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
    for text, stream in (("look [[image_details:1]]", False), ("look [[image_details:1]]", True), ("look", False)):
        oa = client(proxies[0], token)
        messages = [{"role": "user", "content": [{"type": "text", "text": text}, image]}]
        if stream:
            with oa.chat.completions.create(model=model, messages=messages, max_tokens=4, stream=True) as chunks:
                for _ in chunks:
                    pass
        else:
            oa.chat.completions.create(model=model, messages=messages, max_tokens=4)
    rows = wait_rows(book_db, tenant_id, 3)
    # 765 image tokens (the fake's high-detail 1024x1024 image) + the text's words.
    reported = (2 * Decimal("0.1") + 765 * Decimal("0.25") + 4 * Decimal("0.4")) / MTOK
    unreported = (766 * Decimal("0.1") + 4 * Decimal("0.4")) / MTOK  # not reported: plain input
    assert sorted((r["stream"], r["input_image_tokens"], r["cost_usd"]) for r in rows) == sorted(
        [(False, 765, reported), (True, 765, reported), (False, 0, unreported)]
    )


def test_a_reservation_prices_cache_writes_only_when_the_request_can_write_a_cache(proxies, book_db):
    model = "claude-sonnet-4"  # input 3, cached read 0.3, writes 3.75 (5 m) / 6 (1 h), output 15 per Mtok
    text = " ".join(["w"] * 4000)
    plain = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    part = {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    marked = {**plain, "messages": [{"role": "user", "content": [part]}]}
    bound_plain = (prompt_token_bound(plain) * 3 + 15) / MTOK  # no marker: no cache write can occur
    bound_marked = (prompt_token_bound(marked) * 6 + 15) / MTOK  # a 1-hour marker: the 1-hour write price
    budget = budget_of(bound_plain * Decimal("1.2"))
    assert budget < bound_marked  # room for the plain request's bound, not for the marked one's
    tenant_id, token = tenant_with_token(book_db, "reserve", budget_usd=budget)
    headers = {"Authorization": f"Bearer {token}"}
    refused = httpx.post(proxies[0].url + "/v1/chat/completions", json=marked, headers=headers, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded", refused.text
    served = httpx.post(proxies[0].url + "/v1/chat/completions", json=plain, headers=headers, timeout=30)
    assert served.status_code == 200, served.text
    rows = wait_rows(book_db, tenant_id, 2)
    assert [r["status"] for r in rows] == ["rejected", "success"] and rows[1]["cost_usd"] <= bound_plain


def test_a_long_context_request_is_billed_at_the_tier_price(proxies, book_db, run_cli):
    tenant_id, token = tenant_with_token(book_db, "long")
    model = "gpt-4o"
    version = run_cli(
        "prices", "set", model, "--input-per-mtok", "2.5", "--output-per-mtok", "10",
        "--cached-read-per-mtok", "1.25", "--long-context-threshold", "30",
        "--long-input-per-mtok", "5", "--long-output-per-mtok", "20",
        "--effective-at", (effective := datetime.now(UTC) + timedelta(seconds=2)).isoformat(), "--json",
    )  # fmt: skip
    wait_until(lambda: datetime.now(UTC) > effective, what="the effective instant")
    chat(proxies[0], token, model, 30, 4)  # at the threshold: base prices
    chat(proxies[1], token, model, 31, 4, "[[cached:10]]")  # above: the tier, cache reads scaled alike
    rows = wait_rows(book_db, tenant_id, 2)
    assert {r["price_version_id"] for r in rows} == {version["id"]}
    by_prompt = {r["prompt_tokens"]: r["cost_usd"] for r in rows}
    assert by_prompt[30] == (30 * Decimal("2.5") + 4 * 10) / MTOK
    assert by_prompt[31] == (21 * Decimal(5) + 10 * Decimal("2.5") + 4 * 20) / MTOK


def test_an_unpriced_model_is_refused_and_listed_as_unpriced(proxies, book_db, run_cli):
    _, token = tenant_with_token(book_db, "unpriced")
    with pytest.raises(openai.APIStatusError) as refused:
        chat(proxies[0], token, UNPRICED, 3, 2)
    assert refused.value.status_code == 503 and "has no price" in str(refused.value)
    listed = {r["model"]: r["status"] for r in run_cli("prices", "list", "--json")}
    assert listed["gpt-4o"] == "priced"


def test_cli_refuses_bad_prices_with_one_line(run_cli):
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "input price must be a non-negative number" in run_cli(
        "prices", "set", "gpt-4o", "--input-per-mtok", "-1", "--output-per-mtok", "1", "--effective-at", later, ok=False
    )
    assert "more than 10 decimal places" in run_cli(
        "prices", "set", "gpt-4o", "--input-per-mtok", "0.00000000001", "--output-per-mtok", "1",
        "--effective-at", later, ok=False,
    )  # fmt: skip
    assert "ISO-8601" in run_cli(
        "prices", "set", "gpt-4o", "--input-per-mtok", "1", "--output-per-mtok", "1", "--effective-at", "soon", ok=False
    )
    assert "decimal number" in run_cli(
        "prices",
        "set",
        "gpt-4o",
        "--input-per-mtok",
        "abc",
        "--output-per-mtok",
        "1",
        "--effective-at",
        later,
        ok=False,
    )


def test_admin_api_lists_and_sets_prices(book_db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", book_db)
    monkeypatch.setenv("PROXY_MASTER_KEY", MASTER_KEY)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    model = f"api-model-{uuid.uuid4().hex[:6]}"
    with TestClient(create_app()) as http:
        created = http.post(
            "/admin/prices",
            headers=headers,
            json={
                "model": model,
                "input_per_mtok": "1.1",
                "output_per_mtok": 2.2,
                "effective_at": "2026-01-01T00:00:00Z",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["output_per_mtok"] == "2.2" and created.json()["cache_write_1h_per_mtok"] == "2.2"
        listed = http.get("/admin/prices", headers=headers, params={"model": model}).json()
        assert [(r["model"], r["status"], r["input_per_mtok"]) for r in listed] == [(model, "priced", "1.1")]
        typo = http.post("/admin/prices", headers=headers, json={"model": model, "input": "1"})
        assert typo.status_code == 400 and typo.json()["error"]["type"] == "invalid_request_error"
        bad = http.post(
            "/admin/prices",
            headers=headers,
            json={
                "model": model,
                "input_per_mtok": "-1",
                "output_per_mtok": "1",
                "effective_at": "2026-01-02T00:00:00Z",
            },
        )
        assert bad.status_code == 400 and "non-negative" in bad.json()["error"]["message"]
        audio = http.post(
            "/admin/prices",
            headers=headers,
            json={
                "model": model,
                "input_per_mtok": "1.1",
                "output_per_mtok": "2.2",
                "input_audio_per_mtok": 40,
                "output_audio_per_mtok": "80.5",
                "input_image_per_mtok": 0.25,
                "effective_at": "2026-01-03T00:00:00Z",
            },
        )
        assert audio.status_code == 201, audio.text
        modalities = ("input_audio_per_mtok", "output_audio_per_mtok", "input_image_per_mtok")
        assert [audio.json()[k] for k in modalities] == ["40", "80.5", "0.25"]
        assert http.get("/admin/prices").status_code == 401
        tenant_id, _ = tenant_with_token(book_db, "apicard")
        card = http.post(
            "/admin/ratecards",
            headers=headers,
            json={"tenant": tenant_id, "model": model, "input_image_per_mtok": "0.2", "valid_from": "2026-01-01"},
        )
        assert card.status_code == 201, card.text
        assert (card.json()["input_image_per_mtok"], card.json()["multiplier"]) == ("0.2", None)
        listed = http.get("/admin/ratecards", headers=headers, params={"tenant": tenant_id}).json()
        assert [(c["id"], c["model"], c["input_image_per_mtok"]) for c in listed] == [(card.json()["id"], model, "0.2")]
        both = http.post(
            "/admin/ratecards",
            headers=headers,
            json={"tenant": tenant_id, "multiplier": 2, "output_audio_per_mtok": 1, "valid_from": "2026-01-01"},
        )
        assert both.status_code == 400 and "not both" in both.json()["error"]["message"]


def test_a_rate_card_from_mid_period_prices_rows_after_it_and_the_outbox_bills_the_carded_sum(
    proxies, book_db, run_cli, fake_stripe: FakeStripe
):
    customer = f"cus_{uuid.uuid4().hex[:14]}"
    tenant_id, token = tenant_with_token(book_db, "card", stripe_customer_id=customer)
    model = "gemini-1.5-flash"  # list: 0.075 in, 0.3 out per million tokens
    for proxy in proxies:
        chat(proxy, token, model, 7, 3)
    start = datetime.now(UTC) + timedelta(seconds=2)
    card = run_cli("ratecard", "set", tenant_id, "--multiplier", "1.2", "--from", start.isoformat(), "--json")
    assert card["multiplier"] == "1.2" and card["model"] is None
    assert [c["id"] for c in run_cli("ratecard", "list", tenant_id, "--json")] == [card["id"]]
    wait_until(lambda: datetime.now(UTC) > start, what="the rate card's start")
    for proxy in proxies:
        chat(proxy, token, model, 7, 3)
    rows = wait_rows(book_db, tenant_id, 4)
    list_cost = (7 * Decimal("0.075") + 3 * Decimal("0.3")) / MTOK
    assert [(r["start_time"] >= start, r["cost_usd"]) for r in rows] == [
        (False, list_cost),
        (False, list_cost),
        (True, list_cost * Decimal("1.2")),
        (True, list_cost * Decimal("1.2")),
    ]
    windows_closed(rows)
    drain(make_relay(book_db, fake_stripe), book_db)
    with db.connect(book_db) as conn:
        expected = expected_micro_usd(conn, tenant_id)
    assert expected == int((2 * list_cost + 2 * list_cost * Decimal("1.2")) * 1_000_000)
    assert fake_stripe.totals()[customer] == expected


def test_ratecard_cli_refuses_bad_input(book_db, run_cli):
    tenant_id, _ = tenant_with_token(book_db, "badcard")
    assert "either a multiplier or fixed prices" in run_cli(
        "ratecard", "set", tenant_id, "--multiplier", "1.2", "--input-per-mtok", "1", "--from", "2026-01-01", ok=False
    )
    assert "--until must be after --from" in run_cli(
        "ratecard", "set", tenant_id, "--multiplier", "1.2", "--from", "2026-02-01", "--until", "2026-01-01", ok=False
    )
    fixed = run_cli(
        "ratecard", "set", tenant_id, "gpt-4o", "--input-per-mtok", "2", "--from", "2026-01-01T00:00:00Z", "--json"
    )
    assert fixed["input_per_mtok"] == "2" and fixed["multiplier"] is None and fixed["model"] == "gpt-4o"


def test_rerate_after_a_corrected_price_sends_exactly_the_difference_and_twice_is_a_no_op(
    proxies, book_db, run_cli, fake_stripe: FakeStripe, monkeypatch
):
    monkeypatch.setenv("BILLINGPROXY_BILLING_WINDOW_S", "1")  # the proxies' billing window
    customer = f"cus_{uuid.uuid4().hex[:14]}"
    tenant_id, token = tenant_with_token(book_db, "rerate", stripe_customer_id=customer)
    model = "gemini-2.0-flash"  # list: 0.1 in, 0.4 out per million tokens
    began = datetime.now(UTC)
    for i, proxy in enumerate(proxies * 2):
        chat(proxy, token, model, 1000 + i, 300)
    rows = wait_rows(book_db, tenant_id, 4)
    windows_closed(rows)
    relay = make_relay(book_db, fake_stripe)
    drain(relay, book_db)
    first = fake_stripe.totals()[customer]
    with db.connect(book_db) as conn:
        assert first == expected_micro_usd(conn, tenant_id)
    # The provider's price was wrong all along: correct it from before the first request.
    corrected = run_cli(
        "prices", "set", model, "--input-per-mtok", "0.15", "--output-per-mtok", "0.6",
        "--effective-at", (began - timedelta(seconds=1)).isoformat(), "--reason", "corrected", "--json",
    )  # fmt: skip
    window = ["--tenant", tenant_id, "--from", (began - timedelta(minutes=1)).isoformat()]
    window += ["--to", (datetime.now(UTC) + timedelta(minutes=1)).isoformat()]
    new_costs = [(r["prompt_tokens"] * Decimal("0.15") + r["completion_tokens"] * Decimal("0.6")) / MTOK for r in rows]
    difference = sum(new_costs) - sum(r["cost_usd"] for r in rows)
    dry = run_cli("prices", "rerate", *window, "--json")
    assert dry["applied"] is False and Decimal(dry["difference_usd"]) == difference > 0
    assert [(m["model"], m["rows"], m["changed"]) for m in dry["models"]] == [(model, 4, 4)]
    assert [r["cost_usd"] for r in rows_of(book_db, tenant_id)] == [r["cost_usd"] for r in rows]  # untouched

    applied = run_cli("prices", "rerate", *window, "--apply", "--json")
    assert applied["applied"] is True and applied["audit_id"] is not None
    after = rows_of(book_db, tenant_id)
    assert [(r["cost_usd"], r["price_version_id"]) for r in after] == [(c, corrected["id"]) for c in new_costs]
    with db.connect(book_db) as conn:  # the per-key report (a rollup) moves with the rows
        by_key = conn.execute(
            "SELECT sum(cost_usd) AS c FROM usage_daily_attribution WHERE tenant_id = %s AND dimension = 'key'",
            (tenant_id,),
        ).fetchone()["c"]
        by_hour = conn.execute("SELECT sum(cost_usd) AS c FROM usage_hourly WHERE tenant_id = %s", (tenant_id,))
        hourly_total = by_hour.fetchone()["c"]
    assert by_key == hourly_total == sum(r["cost_usd"] for r in after)
    events_before = fake_stripe.calls["meter_events"]
    drain(relay, book_db)
    with db.connect(book_db) as conn:
        billed = expected_micro_usd(conn, tenant_id)
        audit = conn.execute("SELECT * FROM rerate_runs WHERE id = %s", (applied["audit_id"],)).fetchone()
    assert audit["rows_changed"] == 4 and audit["difference_usd"] == difference
    assert fake_stripe.totals()[customer] == billed  # Stripe's sum equals the database's again
    assert billed - first == int(sum(new_costs) * 1_000_000) - int(sum(r["cost_usd"] for r in rows) * 1_000_000)
    assert fake_stripe.calls["meter_events"] > events_before

    again = run_cli("prices", "rerate", *window, "--apply", "--json")
    assert again["applied"] is False and Decimal(again["difference_usd"]) == 0
    assert [m["changed"] for m in again["models"]] == [0]
    events = fake_stripe.calls["meter_events"]
    drain(relay, book_db)
    assert fake_stripe.calls["meter_events"] == events and fake_stripe.totals()[customer] == billed


def test_a_rerate_decrease_sends_nothing_and_is_netted_against_the_next_usage(
    proxies, book_db, run_cli, fake_stripe: FakeStripe, monkeypatch
):
    monkeypatch.setenv("BILLINGPROXY_BILLING_WINDOW_S", "1")
    customer = f"cus_{uuid.uuid4().hex[:14]}"
    tenant_id, token = tenant_with_token(book_db, "decrease", stripe_customer_id=customer)
    model = "gpt-4o-mini"
    began = datetime.now(UTC)
    for proxy in proxies:
        chat(proxy, token, model, 1000, 300)
    rows = wait_rows(book_db, tenant_id, 2)
    windows_closed(rows)
    relay = make_relay(book_db, fake_stripe)
    drain(relay, book_db)
    first = fake_stripe.totals()[customer]
    # A lower price from before the first request: the tenant was over-billed.
    run_cli(
        "prices", "set", model, "--input-per-mtok", "0.05", "--output-per-mtok", "0.2",
        "--effective-at", (began - timedelta(seconds=1)).isoformat(), "--reason", "price cut",
    )  # fmt: skip
    window = ["--tenant", tenant_id, "--from", (began - timedelta(minutes=1)).isoformat()]
    window += ["--to", (datetime.now(UTC) + timedelta(minutes=1)).isoformat()]
    applied = run_cli("prices", "rerate", *window, "--apply")
    assert "carried against the tenant's next usage" in applied and "nothing is sent now" in applied
    events = fake_stripe.calls["meter_events"]
    drain(relay, book_db)
    with db.connect(book_db) as conn:
        lowered = expected_micro_usd(conn, tenant_id)
    assert lowered < first  # the database says less than Stripe holds …
    assert (
        fake_stripe.calls["meter_events"] == events and fake_stripe.totals()[customer] == first
    )  # … no negative event
    # The next usage pays the decrease back first: Stripe receives only what exceeds it.
    for proxy in proxies:
        chat(proxy, token, model, 10, 12_000)  # 12,000 output tokens at 0.2: 2,400 µ$ each, more than the decrease
    later = wait_rows(book_db, tenant_id, 4)
    windows_closed(later)
    drain(relay, book_db)
    with db.connect(book_db) as conn:
        billed = expected_micro_usd(conn, tenant_id)
    new_usage = sum(r["cost_usd"] for r in later[2:]) * 1_000_000
    assert fake_stripe.totals()[customer] == billed  # equal again
    assert abs(fake_stripe.totals()[customer] - first - (new_usage - (first - lowered))) <= 1  # the decrease netted


def test_migration_turns_a_price_multiplier_into_a_rate_card(pg_server):
    from billingproxy.prices import PriceBook, TokenUsage
    from testkit.support import create_database

    url = create_database(pg_server)
    tenant_id = "tn_reseller_before_0014"
    try:
        db.migrate(url, target=13)
        with db.connect(url) as conn:  # as the code of that time wrote it (today's store knows later columns)
            conn.execute("INSERT INTO tenants (id, name, price_multiplier) VALUES (%s, 'reseller', 1.5)", (tenant_id,))
        db.migrate(url)
        with db.connect(url) as conn:
            from billingproxy.prices import import_config_prices

            import_config_prices(conn)
            book = PriceBook()
            book.load(conn)
            column = conn.execute("SELECT price_multiplier FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        assert column["price_multiplier"] == 1  # no longer applied on its own anywhere
        cost, _ = book.cost("gpt-4o", TokenUsage(prompt=10, completion=10), at=datetime.now(UTC), tenant_id=tenant_id)
        assert cost == (10 * Decimal("2.5") + 10 * Decimal(10)) * Decimal("1.5") / MTOK
    finally:
        drop_database(pg_server, url)
