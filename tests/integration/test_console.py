"""The console and the tenant portal over HTTP on a real database: sessions, CSRF, headers, pages
read from the rollups, portal links (hashed, expiring, revocable, one tenant only), the admin API
and the CLI. The browser tests (tests/browser/) drive the same pages in Chromium."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billingproxy import db
from billingproxy.cli import main as cli
from billingproxy.prices import PriceStore
from billingproxy.service import create_app
from billingproxy.service.console.session import COOKIE, SessionSigner
from billingproxy.tenants import TenantStore
from billingproxy.tokens import hash_token
from testkit.billing import drain, make_relay, relay_settings
from tests.console_support import billable_microusd, csrf_of, ledger_cost, login, page_csrf, record, seed_usage

MASTER = "sk-admin-console-" + "c" * 32
PAGES = ["/console", "/console?by=hour", "/console/tenants", "/console/billing", "/console/prices"]


@pytest.fixture
def world(billing_db, fake_stripe):
    """Two tenants with usage this month and last month, reported through the real relay."""
    now = datetime.now(UTC)
    with db.connect(billing_db) as conn:
        store = TenantStore(conn)
        alpha = store.create_tenant("alpha", budget_usd="1", stripe_customer_id="cus_alpha")
        # alpha's markup is a rate card: the price book puts it into each row's cost (seeded so below)
        PriceStore(conn).set_rate_card(alpha.id, None, valid_from=datetime(1970, 1, 1, tzinfo=UTC), multiplier="1.25")
        beta = store.create_tenant("beta", budget_usd="50", budget_period="daily", stripe_customer_id="cus_beta")
    recent = max(now - timedelta(seconds=30), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    records = [
        record(
            alpha.id,
            "0.015432125",
            recent - timedelta(microseconds=i),
            key="key_alpha1",
            end_user="alice" if i < 4 else "bob",
            tags=("chat",) if i % 2 else (),
        )
        for i in range(7)
    ]  # 0.0123457 x 1.25
    records += [record(alpha.id, "0.5", recent, model="gpt-4o-mini", status="failure")]
    records += [record(alpha.id, "0.4166666250", now - timedelta(days=40))]  # an earlier month: 0.3333333 x 1.25
    records += [record(beta.id, "0.0000001", recent - timedelta(microseconds=i), model="claude") for i in range(3)]
    seed_usage(billing_db, records)
    drain(make_relay(billing_db, fake_stripe), billing_db)
    return {"url": billing_db, "alpha": alpha, "beta": beta, "stripe": fake_stripe, "now": now}


@pytest.fixture
def app_client(world):
    billing = relay_settings(world["stripe"])
    with TestClient(create_app(world["url"], admin_key=MASTER, billing=billing)) as client:
        yield client


@pytest.fixture
def operator(app_client):
    login(app_client, MASTER)
    return app_client


def test_no_session_redirects_every_page_to_login(app_client, world):
    for path in [*PAGES, f"/console/tenants/{world['alpha'].id}", f"/console/tenants/{world['alpha'].id}/usage.csv"]:
        response = app_client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole")
    response = app_client.post("/console/tenants", data={"name": "sneaky"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/console/login")


def test_wrong_key_gives_no_session(app_client):
    response = login(app_client, "sk-admin-wrong-" + "x" * 32, expect=401)
    assert "not the master key" in response.text
    assert COOKIE not in app_client.cookies
    assert app_client.get("/console", follow_redirects=False).status_code == 303
    empty = login(app_client, "", expect=401)
    assert COOKIE not in app_client.cookies and empty.status_code == 401


def test_session_cookie_is_signed_httponly_strict_and_expires(app_client):
    response = login(app_client, MASTER)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), cookie
    assert MASTER not in cookie
    assert app_client.get("/console").status_code == 200
    good = app_client.cookies[COOKIE]
    app_client.cookies.clear()
    app_client.cookies.set(COOKIE, good)
    assert app_client.get("/console", follow_redirects=False).status_code == 200  # the harness works
    payload, signature = good.split(".")
    for forged in (payload + "." + signature[:-2] + "AA", payload[:-2] + "e3." + signature, "x.y", ""):
        app_client.cookies.clear()
        app_client.cookies.set(COOKIE, forged)
        assert app_client.get("/console", follow_redirects=False).status_code == 303, forged
    _, expired = SessionSigner(MASTER, ttl_s=60).issue(now=time.time() - 120)
    app_client.cookies.clear()
    app_client.cookies.set(COOKIE, expired)
    assert app_client.get("/console", follow_redirects=False).status_code == 303
    _, other_key = SessionSigner("sk-admin-another-" + "k" * 32).issue()
    app_client.cookies.clear()
    app_client.cookies.set(COOKIE, other_key)
    assert app_client.get("/console", follow_redirects=False).status_code == 303


def test_posts_without_the_csrf_token_are_refused(operator, world):
    alpha = world["alpha"]
    assert operator.post("/console/tenants", data={"name": "no-csrf"}).status_code == 403
    assert operator.post("/console/tenants", data={"name": "bad-csrf", "csrf": "0" * 64}).status_code == 403
    assert operator.post(f"/console/tenants/{alpha.id}/suspend", data={}).status_code == 403
    assert operator.post(f"/console/tenants/{alpha.id}/keys", data={"name": "x"}).status_code == 403
    assert operator.post(f"/console/tenants/{alpha.id}/portal-links", data={}).status_code == 403
    assert operator.post("/console/logout", data={}).status_code == 403
    with db.connect(world["url"]) as conn:
        store = TenantStore(conn)
        assert store.get_tenant(alpha.id).status == "active" and store.list_keys(alpha.id) == []
        assert conn.execute("SELECT count(*) AS n FROM tenants WHERE name LIKE %s", ("%csrf%",)).fetchone()["n"] == 0
        assert conn.execute("SELECT count(*) AS n FROM portal_links").fetchone()["n"] == 0
    # the login form has its own (double-submit) token
    fresh = TestClient(operator.app)
    assert fresh.post("/console/login", data={"master_key": MASTER}).status_code == 403
    assert COOKIE not in fresh.cookies


def test_security_headers_on_console_and_portal_pages(operator, world):
    link = operator.post(
        f"/admin/tenants/{world['alpha'].id}/portal-links", headers={"Authorization": f"Bearer {MASTER}"}
    ).json()
    portal_path = link["url"].removeprefix("http://testserver")
    for path in [
        *PAGES,
        "/console/login",
        f"/console/tenants/{world['alpha'].id}",
        portal_path,
        portal_path + "/usage.csv",
    ]:
        response = operator.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'none'" in csp and "default-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert operator.get("/portal/bpp_unknown").headers["cache-control"] == "no-store"


def test_logout_ends_the_session(operator):
    response = operator.post("/console/logout", data={"csrf": page_csrf(operator)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    assert COOKIE not in operator.cookies
    assert operator.get("/console", follow_redirects=False).status_code == 303


def test_login_redirects_only_inside_the_console(app_client):
    form = app_client.get("/console/login?next=https://evil.example/")
    assert 'value="/console"' in form.text
    response = app_client.post(
        "/console/login",
        data={"master_key": MASTER, "csrf": csrf_of(form.text), "next": "//evil.example/console"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/console"


def usd6(value: Decimal) -> str:
    return f"${value:,.6f}"


def test_pages_show_the_rollups(operator, world):
    alpha, beta = world["alpha"], world["beta"]
    month_alpha = ledger_cost(world["url"], alpha.id)
    for path in [*PAGES, f"/console/tenants/{alpha.id}"]:
        page = operator.get(path)
        assert page.status_code == 200, path
        assert " style=" not in page.text and "<script" not in page.text, path  # the CSP allows neither
    overview = operator.get("/console").text
    assert "alpha" in overview and "beta" in overview and "Top models this month" in overview
    assert f'data-usd="{month_alpha}"' in overview  # alpha in the top tenants, the ledger's sum
    assert "<svg" in overview and "Requests per day" in overview
    hourly = operator.get("/console?by=hour").text
    assert "Spend per hour" in hourly and "<svg" in hourly
    assert "Requests per hour" in hourly and "Error rate per hour" in hourly  # the hourly rollup
    tenant = operator.get(f"/console/tenants/{alpha.id}").text
    assert f'id="month-cost" data-usd="{month_alpha}"' in tenant
    # By end user, key and tag from the attribution rollup: alice 4 times, bob 3, 3 tagged 'chat'.
    for dim, value, count in [("end_user", "alice", 4), ("end_user", "bob", 3), ("key", "key_alpha1", 7)]:
        assert f'id="by-{dim}"' in tenant
        assert f'<code>{value}</code></td><td class="n">{count}</td>' in tenant, (dim, value)
    assert 'id="by-tag"' in tenant and '<code>chat</code></td><td class="n">3</td>' in tenant
    assert usd6(month_alpha) in tenant and "gpt-4o-mini" in tenant
    tenants = operator.get("/console/tenants").text
    assert alpha.id in tenants and beta.id in tenants
    billing = operator.get("/console/billing").text
    assert "cus_alpha" in billing and 'data-status="sent"' in billing
    expected = billable_microusd(world["url"], alpha.id, Decimal(1))
    with db.connect(world["url"]) as conn:
        total = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS s FROM litellm_usage WHERE tenant_id = %s AND status = 'success'",
            (alpha.id,),
        ).fetchone()["s"]
    all_time = int(total * 1_000_000 * Decimal(1))
    row = re.search(r'data-customer="cus_alpha">(.*?)</tr>', billing, re.S).group(1)
    with db.connect(world["url"]) as conn:
        sent = conn.execute(
            "SELECT sum(value) AS s FROM billing_outbox WHERE tenant_id = %s AND status = 'sent'", (alpha.id,)
        ).fetchone()["s"]
    cells = re.findall(r'<td class="n">([^<]*)</td>', row)
    assert cells[:2] == [f"{all_time:,}", f"{sent:,}"] and expected <= all_time  # billable, reported
    assert sent == world["stripe"].totals()["cus_alpha"]
    prices = operator.get("/console/prices").text
    assert 'data-model="gpt-4o"' in prices and '<td class="n">2.5</td>' in prices  # USD per Mtok


def test_prices_page_shows_the_book_scheduled_versions_unpriced_models_and_rate_cards(
    operator, world, tmp_path, monkeypatch
):
    config = tmp_path / "config.yaml"
    text = (Path(__file__).parents[2] / "config.yaml").read_text()
    config.write_text(
        text.replace(
            "model_list:\n", "model_list:\n  - model_name: not-in-the-book\n    litellm_params: {model: openai/x}\n", 1
        )
    )
    monkeypatch.setenv("BILLINGPROXY_CONFIG", str(config))
    later = world["now"] + timedelta(days=3)
    with db.connect(world["url"]) as conn:
        store = PriceStore(conn)
        upcoming = store.set_price(
            "gpt-4o", input_per_mtok="2", output_per_mtok="8", input_audio_per_mtok="40", effective_at=later,
            reason="announced cut",
        )  # fmt: skip
        carded = store.set_rate_card(
            world["beta"].id, "gpt-4o", valid_from=later, fixed={"input": "1.5"}, reason="contract 2027"
        )
    page = operator.get("/console/prices").text
    in_force = re.search(r'<table id="prices">(.*?)</table>', page, re.S).group(1)
    scheduled = re.search(r'<table id="scheduled">(.*?)</table>', page, re.S).group(1)
    assert 'data-model="gpt-4o"' in in_force and f'data-version="{upcoming.id}"' not in in_force
    row = re.search(rf'data-version="{upcoming.id}">(.*?)</tr>', scheduled, re.S).group(1)
    assert "announced cut" in row and re.findall(r'<td class="n">([^<]*)</td>', row)[1:3] == ["2", "8"]
    assert ">40</td>" in row  # the audio price, where set
    unpriced = re.search(r'<div class="panel" id="unpriced">(.*?)</div>', page, re.S).group(1)
    assert 'data-model="not-in-the-book"' in unpriced and "model_not_priced" in unpriced
    assert 'data-model="gpt-4o"' not in unpriced
    cards = re.search(r'<table id="ratecards">(.*?)</table>', page, re.S).group(1)
    assert re.search(r'data-state="active">.*?alpha.*?all models.*?>1\.25<', cards, re.S)
    assert re.search(
        rf'data-card="{carded.id}" data-state="scheduled">.*?beta.*?gpt-4o.*?>1\.5<.*?contract 2027', cards, re.S
    )
    only_beta = operator.get("/console/prices", params={"tenant": "beta"}).text
    assert f'data-card="{carded.id}"' in only_beta and "alpha</a>" not in only_beta
    assert operator.get("/console/prices", params={"tenant": "nobody"}).status_code == 404


def test_invoice_preview_equals_the_billable_sum_and_what_was_reported(operator, world):
    alpha = world["alpha"]
    page = operator.get(f"/console/tenants/{alpha.id}").text
    billable = billable_microusd(world["url"], alpha.id, Decimal(1))
    assert f'id="invoice-billable" data-microusd="{billable}"' in page
    with db.connect(world["url"]) as conn:
        sent = conn.execute(
            """SELECT coalesce(sum(value), 0) AS s FROM billing_outbox WHERE tenant_id = %s AND status = 'sent'
               AND window_start >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'""",
            (alpha.id,),
        ).fetchone()["s"]
    assert sent == billable  # the relay reported all of it (its windows are closed)
    assert f'id="invoice-reported" data-microusd="{sent}"' in page
    assert world["stripe"].totals()["cus_alpha"] >= sent


def test_tenant_create_suspend_resume_and_keys_from_the_console(operator, world):
    csrf = page_csrf(operator, "/console/tenants")
    bad = operator.post("/console/tenants", data={"csrf": csrf, "name": "gamma", "budget_usd": "lots"})
    assert bad.status_code == 400 and "budget must be a number" in bad.text
    created = operator.post(
        "/console/tenants",
        data={"csrf": csrf, "name": "gamma", "budget_usd": "5", "models": "gpt-4o,demo", "rpm_limit": "60"},
        follow_redirects=False,
    )
    assert created.status_code == 303
    path = created.headers["location"]
    tenant_id = path.rsplit("/", 1)[1]
    assert operator.post(f"{path}/suspend", data={"csrf": csrf}).status_code == 200
    with db.connect(world["url"]) as conn:
        assert TenantStore(conn).get_tenant(tenant_id).status == "suspended"
    operator.post(f"{path}/resume", data={"csrf": csrf})
    made = operator.post(f"{path}/keys", data={"csrf": csrf, "name": "from-console", "expires_in_days": "7"})
    token = re.search(r'id="new-token">([^<]+)<', made.text).group(1)
    assert token.startswith("sk-bp-")
    assert token not in operator.get(path).text  # shown once
    with db.connect(world["url"]) as conn:
        (key,) = TenantStore(conn).list_keys(tenant_id)
        assert conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key.id,)).fetchone()["key_hash"] == (
            hash_token(token)
        )
    rotated = operator.post(f"{path}/keys/{key.id}/rotate", data={"csrf": csrf, "grace_hours": "1"})
    assert f"replaces {key.id}" in rotated.text
    new_token = re.search(r'id="new-token">([^<]+)<', rotated.text).group(1)
    assert new_token != token
    # a key of another tenant cannot be touched through this tenant's page
    with db.connect(world["url"]) as conn:
        other_key, _ = TenantStore(conn).create_key(world["beta"].id)
    assert operator.post(f"{path}/keys/{other_key.id}/revoke", data={"csrf": csrf}).status_code == 404
    assert operator.post(f"{path}/keys/{key.id}/revoke", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    with db.connect(world["url"]) as conn:
        assert TenantStore(conn).get_key(key.id).state() == "revoked"
        assert TenantStore(conn).get_key(other_key.id).state() == "active"


def portal_link(client, tenant_id: str, **body) -> str:
    response = client.post(
        f"/admin/tenants/{tenant_id}/portal-links", json=body or None, headers={"Authorization": f"Bearer {MASTER}"}
    )
    assert response.status_code == 201, response.text
    return response.json()["url"].removeprefix("http://testserver")


def test_portal_shows_one_tenant_and_nothing_of_another(app_client, world):
    alpha, beta = world["alpha"], world["beta"]
    path = portal_link(app_client, alpha.id)
    token = path.rsplit("/", 1)[1]
    page = app_client.get(path)
    assert page.status_code == 200 and "alpha" in page.text and "beta" not in page.text and beta.id not in page.text
    billable = billable_microusd(world["url"], alpha.id, Decimal(1))
    assert f'data-microusd="{billable}"' in page.text
    csv_text = app_client.get(path + "/usage.csv").text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("tenant,day,model") and all(line.startswith("alpha,") for line in lines[1:])
    assert len(lines) > 1
    # id guessing: another tenant's id, name or link id in every place a portal URL has
    with db.connect(world["url"]) as conn:
        beta_link = conn.execute("SELECT id FROM portal_links WHERE tenant_id = %s", (beta.id,)).fetchone()
    assert beta_link is None
    beta_path = portal_link(app_client, beta.id)
    with db.connect(world["url"]) as conn:
        beta_link_id = conn.execute("SELECT id FROM portal_links WHERE tenant_id = %s", (beta.id,)).fetchone()["id"]
    for guess in (
        f"/portal/{beta.id}", f"/portal/{beta.name}", f"/portal/{beta_link_id}", f"/portal/{hash_token(token)}",
        f"/portal/{token}x", f"/portal/{token[:-1]}", f"/portal/{beta.id}/usage.csv", "/portal/bpp_",
        f"/console/tenants/{beta.id}", f"/console/tenants/{beta.id}/usage.csv",
    ):  # fmt: skip
        response = app_client.get(guess, follow_redirects=False)
        assert response.status_code in (303, 404), guess
        assert "beta" not in response.text.replace("/console/login", ""), guess
    for query in (f"?tenant={beta.id}", f"?tenant_id={beta.id}", f"?ref={beta.name}"):
        for suffix in ("", "/usage.csv"):
            response = app_client.get(path + suffix + query)
            assert response.status_code == 200 and "beta" not in response.text and beta.id not in response.text
    assert app_client.get(beta_path).status_code == 200  # beta's own link works, for beta only
    assert "beta" in app_client.get(beta_path).text and "alpha" not in app_client.get(beta_path).text
    # a portal link is no console session
    assert app_client.get("/console", follow_redirects=False).status_code == 303


def test_revoked_and_expired_portal_links_are_gone(app_client, world):
    alpha = world["alpha"]
    revoked = portal_link(app_client, alpha.id)
    expired = portal_link(app_client, alpha.id, expires_in_days=1)
    headers = {"Authorization": f"Bearer {MASTER}"}
    links = app_client.get("/admin/portal-links", params={"tenant": alpha.id}, headers=headers).json()
    assert len(links) == 2 and all(link["state"] == "active" for link in links) and "url" not in links[0]
    revoked_id = links[0]["id"]
    assert app_client.post(f"/admin/portal-links/{revoked_id}/revoke", headers=headers).json()["state"] == "revoked"
    with db.connect(world["url"]) as conn:  # the console's own table: age a link past its expiry
        conn.execute(
            "UPDATE portal_links SET expires_at = now() - interval '1 second' WHERE id = %s", (links[1]["id"],)
        )
        conn.commit()
        stored = conn.execute("SELECT token_hash FROM portal_links").fetchall()
    for path in (revoked, expired):
        assert app_client.get(path).status_code == 410
        assert app_client.get(path + "/usage.csv").status_code == 410
        assert path.rsplit("/", 1)[1] not in str(stored)  # only hashes are stored
    assert app_client.get("/portal/bpp_" + "x" * 43).status_code == 404


def test_portal_link_admin_api_needs_the_master_key(app_client, world):
    alpha = world["alpha"]
    assert app_client.post(f"/admin/tenants/{alpha.id}/portal-links").status_code == 401
    wrong = {"Authorization": "Bearer sk-bp-not-the-master"}
    assert app_client.post(f"/admin/tenants/{alpha.id}/portal-links", headers=wrong).status_code == 401
    assert app_client.get("/admin/portal-links", headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {MASTER}"}
    too_long = app_client.post(f"/admin/tenants/{alpha.id}/portal-links", json={"expires_in_days": 1000}, headers=good)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "expires_in_days"
    assert app_client.post("/admin/tenants/tn_missing/portal-links", headers=good).status_code == 404


def test_portal_link_through_the_cli(world, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", world["url"])
    monkeypatch.setenv("BILLINGPROXY_PUBLIC_URL", "https://billing.example.com/")
    result = CliRunner().invoke(cli, ["portal", "link", "alpha", "--expires-in-days", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["url"].startswith("https://billing.example.com/portal/bpp_") and data["tenant_id"] == world["alpha"].id
    expires = datetime.fromisoformat(data["expires_at"])
    assert timedelta(days=2.9) < expires - datetime.now(UTC) < timedelta(days=3.1)
    listed = json.loads(CliRunner().invoke(cli, ["portal", "list", "--tenant", "alpha", "--json"]).output)
    assert [link["id"] for link in listed] == [data["id"]]
    revoked = CliRunner().invoke(cli, ["portal", "revoke", data["id"], "--json"])
    assert json.loads(revoked.output)["state"] == "revoked"
    missing = CliRunner().invoke(cli, ["portal", "link", "no-such-tenant"])
    assert missing.exit_code != 0 and "no tenant" in missing.output
    human = CliRunner().invoke(cli, ["portal", "link", "beta", "--base-url", "http://127.0.0.1:9"])
    assert human.exit_code == 0 and "http://127.0.0.1:9/portal/bpp_" in human.output


def test_cookies_are_secure_behind_an_https_front_end(app_client):
    """Cloud Run terminates TLS and forwards http with X-Forwarded-Proto: https."""
    https = {"X-Forwarded-Proto": "https"}
    form = app_client.get("/console/login", headers=https)
    assert "secure" in form.headers["set-cookie"].lower()
    login_cookie = form.headers["set-cookie"].split(";", 1)[0]  # a Secure cookie: httpx keeps it off http
    response = app_client.post(
        "/console/login",
        data={"master_key": MASTER, "csrf": csrf_of(form.text)},
        headers={**https, "Cookie": login_cookie},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    session_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
    assert "secure" in session_cookie.lower() and "httponly" in session_cookie.lower()
    link = app_client.post(
        "/admin/tenants/alpha/portal-links", headers={**https, "Authorization": f"Bearer {MASTER}"}
    ).json()
    assert link["url"].startswith("https://testserver/portal/bpp_")


def test_tenant_page_shows_key_and_end_user_budgets_with_this_periods_spend(operator, world):
    """A key with its own budget, the tenant's default end-user budget and an override: each row
    shows the budget, what the usage rows say was spent this period, and what is left."""
    now = world["now"]
    recent = max(now - timedelta(seconds=30), now.replace(hour=0, minute=0, second=0, microsecond=0))
    with db.connect(world["url"]) as conn:
        store = TenantStore(conn)
        tenant = store.create_tenant(f"levels-{now.timestamp():.0f}")
        key, _ = store.create_key(tenant.id, name="budgeted", budget_usd="2", budget_period="daily", rpm_limit=60)
        store.create_key(tenant.id, name="plain")
        store.update_tenant(tenant.id, end_user_budget_usd="1", end_user_budget_period="daily")
        store.set_end_user_budget(tenant.id, "vip", budget_usd="5")
    seed_usage(
        world["url"],
        [record(tenant.id, "0.25", recent - timedelta(microseconds=i), key=key.id, end_user="carol") for i in range(3)]
        + [record(tenant.id, "0.5", recent - timedelta(microseconds=9), key=key.id, end_user="vip")],
    )
    page = operator.get(f"/console/tenants/{tenant.id}").text
    row = re.search(rf'<tr data-key="{key.id}">.*?</tr>', page, re.S).group(0)
    assert "$2.00 daily" in row and 'data-usd="1.25' in row and 'class="left" data-usd="0.75' in row
    assert "60 / —" in row
    assert "tenant's" in page  # the plain key has no budget of its own
    carol = re.search(r'<tr data-end-user="carol">.*?</tr>', page, re.S).group(0)
    assert "$1.00 daily" in carol and "default" in carol and 'data-usd="0.75' in carol
    assert 'class="n left" data-usd="0.25' in carol
    vip = re.search(r'<tr data-end-user="vip">.*?</tr>', page, re.S).group(0)
    assert "$5.00 daily" in vip and "override" in vip and 'class="n left" data-usd="4.5' in vip
