"""The console and the portal in a real headless Chromium, against the real billing service process,
the real litellm proxy and PostgreSQL: log in, spend == the rows, a key made in the console works
through the proxy, a suspension makes the proxy refuse, the portal's invoice preview == the
database's billable sum, and nothing of another tenant is reachable.

Screenshots of the overview, a tenant page, the prices page and the portal are written to ``$CONSOLE_SCREENSHOTS``
(``docs/screenshots`` for the README: ``CONSOLE_SCREENSHOTS=docs/screenshots make test-browser``),
else to a temporary directory.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from billingproxy import db
from billingproxy.errors import NotFound
from billingproxy.prices import PriceStore
from billingproxy.tenants import TenantStore
from testkit.billing import make_relay
from testkit.support import MASTER_KEY, REPO, wait_until
from tests.console_support import billable_microusd, ledger_cost, record, seed_usage

SERVED: list[str] = []  # request ids the proxy answered (each becomes a row, written in the background)


def chat(proxy, token: str, content: str = "one two three"):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    response = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}], max_tokens=5
    )
    SERVED.append(response._request_id)
    return response


def rows_of_served(database_url: str) -> int:
    with db.connect(database_url) as conn:
        query = "SELECT count(*) AS n FROM litellm_usage WHERE request_id = ANY(%s)"
        return conn.execute(query, (SERVED,)).fetchone()["n"]


def usd6(value: Decimal) -> str:
    return f"${value:,.6f}"


@pytest.fixture(scope="module")
def demo(database_url, proxy):
    """The demo tenant as ``make run`` makes it ($10 monthly budget, RPM 600), linked to a (fake)
    Stripe customer, with usage through the proxy; plus a few tenants with history for the charts."""
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        try:
            tenant = store.get_tenant("demo")
        except NotFound:
            tenant = store.create_tenant("demo", budget_usd="10", rpm_limit=600)
        tenant = store.update_tenant(tenant.id, stripe_customer_id=f"cus_demo{secrets.token_hex(4)}")
        _, token = store.create_key(tenant.id, name="make-run demo")
        other = store.create_tenant(f"other-{secrets.token_hex(3)}", budget_usd="100")
        others = [other]
        for name, budget in (("acme", "40"), ("globex", "25"), ("initech", "5")):
            others.append(store.create_tenant(f"{name}-{secrets.token_hex(2)}", budget_usd=budget))
    for _ in range(3):
        chat(proxy, token)
    wait_until(lambda: ledger_cost(database_url, tenant.id) > 0, what="the demo tenant's usage rows")
    now = datetime.now(UTC)
    history = []
    for n, t in enumerate(others):
        for day in range(0, 28):
            when = now - timedelta(days=day, minutes=5)
            for i in range(1 + (day * (n + 3)) % 5):
                status = "failure" if (day + i + n) % 9 == 0 else "success"
                model = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")[(day + i) % 3]
                cost = (Decimal("0.01") * (n + 1) * (1 + day % 7) / (i + 1)).quantize(Decimal("1e-7"))
                history.append(record(t.id, str(cost), when - timedelta(seconds=i), model=model, status=status))
    seed_usage(database_url, history)
    return {"tenant": tenant, "token": token, "other": other}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    if not path.is_absolute():
        path = REPO / path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(browser_context):
    page = browser_context.new_page()
    page.set_default_timeout(15_000)
    yield page
    page.close()


def screenshot(page, path: Path, **options) -> None:
    """A PNG of the page, reduced to a 128-colour palette (a few dozen KB: committed for the README)."""
    from PIL import Image

    page.screenshot(path=str(path), **options)
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=128).save(path, optimize=True)


def text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def test_1_login_then_the_demo_tenants_spend_equals_its_rows(page, billing_service, demo, database_url, shots):
    tenant = demo["tenant"]
    page.goto(billing_service.url + "/console")
    assert page.url.startswith(billing_service.url + "/console/login")  # no session: the login form
    page.fill("#master_key", "sk-admin-wrong-" + "w" * 32)
    page.click("#login")
    assert "not the master key" in text(page, "#login-error")
    assert not [c for c in page.context.cookies() if c["name"] == "bp_console"]
    page.fill("#master_key", MASTER_KEY)
    page.click("#login")
    page.wait_for_url(billing_service.url + "/console")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "bp_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert "Top tenants this month" in page.content()
    screenshot(page, shots / "overview.png")

    page.click("text=Tenants")
    page.click(f"a[href='/console/tenants/{tenant.id}']")
    expected = ledger_cost(database_url, tenant.id)
    assert text(page, "#month-cost") == usd6(expected)
    assert Decimal(page.get_attribute("#month-cost", "data-usd")) == expected
    assert Decimal(page.get_attribute("#period-spent", "data-usd")) >= expected  # the budget store counts it too


def test_2_a_key_created_in_the_console_works_through_the_proxy(page, billing_service, demo, proxy, database_url):
    tenant = demo["tenant"]
    page.goto(f"{billing_service.url}/console/tenants/{tenant.id}")
    page.fill("#key-name", "from-the-browser")
    page.click("#create-key-button")
    token = text(page, "#new-token")
    assert token.startswith("sk-bp-")
    response = chat(proxy, token, "four five six seven")
    assert response.choices[0].message.content
    page.goto(f"{billing_service.url}/console/tenants/{tenant.id}")
    assert token not in page.content()
    with db.connect(database_url) as conn:
        key = next(k for k in TenantStore(conn).list_keys(tenant.id) if k.name == "from-the-browser")

    def metered() -> bool:
        with db.connect(database_url) as conn:
            row = conn.execute("SELECT 1 FROM litellm_usage WHERE api_key_id = %s", (key.id,)).fetchone()
        return row is not None

    wait_until(metered, what="the new key's usage row")
    expected = ledger_cost(database_url, tenant.id)
    wait_until(
        lambda: (page.reload() or True) and text(page, "#month-cost") == usd6(expected),
        what="the tenant page to show the ledger's sum",
    )


def test_3_suspend_in_the_console_and_the_proxy_refuses(page, billing_service, demo, proxy):
    tenant, token = demo["tenant"], demo["token"]
    page.goto(f"{billing_service.url}/console/tenants/{tenant.id}")
    page.click("#suspend")
    assert text(page, "#tenant-status") == "suspended"

    def refused() -> bool:
        try:
            chat(proxy, token)
        except openai.PermissionDeniedError:
            return True
        return False

    wait_until(refused, timeout=15, interval=0.2, what="the proxy to refuse the suspended tenant")
    page.click("#resume")
    assert text(page, "#tenant-status") == "active"
    wait_until(lambda: chat(proxy, token), timeout=15, interval=0.2, what="the proxy to accept it again")


def test_4_the_portal_invoice_preview_equals_the_billable_sum(
    page, browser_context, billing_service, demo, database_url, fake_stripe, shots
):
    tenant = demo["tenant"]
    # report the closed windows to (fake) Stripe through the real relay, so "reported" is non-zero too
    relay = make_relay(database_url, fake_stripe)

    def reported_all() -> bool:
        relay.run_once()
        with db.connect(database_url) as conn:
            left = conn.execute(
                """SELECT count(*) AS n FROM billing_accrual WHERE tenant_id = %s AND cost_usd <> sealed_cost_usd""",
                (tenant.id,),
            ).fetchone()["n"]
            pending = conn.execute(
                "SELECT count(*) AS n FROM billing_outbox WHERE tenant_id = %s AND status = 'pending'", (tenant.id,)
            ).fetchone()["n"]
        return left == 0 and pending == 0

    # Every answered request's row first: the last one (test 3's) may still be in the proxy's writer.
    wait_until(lambda: rows_of_served(database_url) == len(SERVED), timeout=30, what="the served requests' rows")
    wait_until(reported_all, timeout=60, interval=0.5, what="the demo tenant's usage to be reported")
    page.goto(f"{billing_service.url}/console/tenants/{tenant.id}")
    screenshot(page, shots / "tenant.png")
    page.click("#create-link-button")
    url = text(page, "#new-link")
    assert url.startswith(billing_service.url + "/portal/bpp_")

    portal = browser_context.new_page()
    portal.goto(url)
    billable = billable_microusd(database_url, tenant.id, tenant.price_multiplier)
    assert int(portal.get_attribute("#invoice-billable", "data-microusd")) == billable
    assert text(portal, "#invoice-billable") == usd6(Decimal(billable) / 1_000_000)
    assert int(portal.get_attribute("#invoice-reported", "data-microusd")) == billable
    assert fake_stripe.totals().get(tenant.stripe_customer_id) == billable
    assert text(portal, "#month-cost") == usd6(ledger_cost(database_url, tenant.id))
    screenshot(portal, shots / "portal.png")
    csv_body = portal.request.get(url + "/usage.csv").text()
    assert csv_body.startswith("tenant,day,model") and all(
        line.startswith("demo,") for line in csv_body.strip().splitlines()[1:]
    )
    demo["portal_url"] = url
    portal.close()


def test_5_the_portal_reaches_nothing_of_another_tenant(browser_context, billing_service, demo):
    url, other = demo["portal_url"], demo["other"]
    token = url.rsplit("/", 1)[1]
    portal = browser_context.new_page()
    portal.context.clear_cookies()  # a tenant has no console session
    for guess in (
        f"/portal/{other.id}", f"/portal/{other.name}", f"/portal/{token}/../{other.id}", f"/portal/{token[:-2]}",
        f"/portal/{other.id}/usage.csv",
    ):  # fmt: skip
        response = portal.goto(billing_service.url + guess)
        assert response.status == 404, guess
        assert other.name not in portal.content()
    for suffix in (f"?tenant={other.id}", f"?tenant_id={other.id}&ref={other.name}"):
        response = portal.goto(url + suffix)
        assert response.status == 200 and other.name not in portal.content() and other.id not in portal.content()
        body = portal.request.get(url + "/usage.csv" + suffix).text()
        assert other.name not in body and other.id not in body
    response = portal.goto(f"{billing_service.url}/console/tenants/{other.id}")
    assert re.search(r"/console/login", portal.url) and other.name not in portal.content()
    portal.close()


def test_6_the_prices_page_shows_the_book_and_the_rate_cards(page, billing_service, demo, database_url, shots):
    tenant = demo["tenant"]
    later = datetime.now(UTC) + timedelta(days=7)
    with db.connect(database_url) as conn:
        store = PriceStore(conn)
        version = store.set_price("gpt-4o-mini", input_per_mtok="0.12", output_per_mtok="0.5", effective_at=later)
        card = store.set_rate_card(tenant.id, "gpt-4o", valid_from=datetime.now(UTC), multiplier="0.9", reason="pilot")
    page.goto(billing_service.url + "/console/prices")
    if "/console/login" in page.url:  # run alone (-k): log in first
        page.fill("#master_key", MASTER_KEY)
        page.click("#login")
        page.wait_for_url(billing_service.url + "/console/prices")
    in_force = page.locator("#prices tr[data-model='gpt-4o'] td")
    assert in_force.nth(3).inner_text() == "2.5" and in_force.nth(4).inner_text() == "10"
    audio = page.locator("#prices tr[data-model='gpt-4o-audio-preview'] td")
    assert (audio.nth(10).inner_text(), audio.nth(11).inner_text()) == ("40", "80")
    scheduled = page.locator(f"#scheduled tr[data-version='{version.id}'] td")
    assert scheduled.nth(0).inner_text() == "gpt-4o-mini" and scheduled.nth(3).inner_text() == "0.12"
    row = page.locator(f"#ratecards tr[data-card='{card.id}']")
    assert "active" in row.inner_text() and "0.9" in row.inner_text() and tenant.name in row.inner_text()
    screenshot(page, shots / "prices.png", full_page=True)


def test_7_a_revoked_portal_link_is_gone(page, browser_context, billing_service, demo):
    tenant = demo["tenant"]
    page.goto(f"{billing_service.url}/console/tenants/{tenant.id}")
    if "/console/login" in page.url:  # the previous test dropped the cookies: log in again
        page.fill("#master_key", MASTER_KEY)
        page.click("#login")
        page.wait_for_url(f"{billing_service.url}/console/tenants/{tenant.id}")
    page.locator("#links form button").first.click()
    portal = browser_context.new_page()
    response = portal.goto(demo["portal_url"])
    assert response.status == 410 and "expired or was revoked" in portal.content()
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    portal.close()
    page.click("#logout")
    page.goto(billing_service.url + "/console/billing")
    assert "/console/login" in page.url
