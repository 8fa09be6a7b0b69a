"""Helpers for the console tests: logging in over HTTP, reading forms, seeding usage through the writer."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from billingproxy import db
from billingproxy.metering import UsageRecord, UsageStore

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(client, master_key: str, *, expect: int = 303):
    """Log in through the real form (double-submit CSRF); returns the POST response."""
    form = client.get("/console/login")
    assert form.status_code == 200
    response = client.post(
        "/console/login",
        data={"master_key": master_key, "csrf": csrf_of(form.text), "next": "/console"},
        follow_redirects=False,
    )
    assert response.status_code == expect, response.text
    return response


def page_csrf(client, path: str = "/console") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


def record(
    tenant_id: str,
    cost: str,
    when: datetime,
    *,
    model: str = "gpt-4o",
    status: str = "success",
    key=None,
    end_user: str | None = None,
    tags: tuple[str, ...] = (),
):
    return UsageRecord.from_json(
        dict(
            end_user=end_user,
            tags=list(tags),
            request_id=f"req-{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            api_key_id=key,
            model=model,
            model_group=model,
            provider="openai",
            call_type="acompletion",
            prompt_tokens=100,
            completion_tokens=20,
            cached_tokens=0,
            reasoning_tokens=0,
            total_tokens=120,
            cost_usd=Decimal(cost) if status == "success" else Decimal(0),
            latency_ms=200,
            status=status,
            http_status=200 if status == "success" else 500,
            error_type=None if status == "success" else "InternalServerError",
            stream=False,
            cache_hit=False,
            customer_id=None,
            trace_id=None,
            start_time=when,
            end_time=when + timedelta(milliseconds=200),
        )
    )


def seed_usage(url: str, records: list[UsageRecord], window_s: int = 60) -> None:
    """Through the proxies' own writer path: rows, the daily rollup and the billing accrual."""
    with db.connect(url) as conn:
        UsageStore(window_s).write(conn, records)
        conn.commit()


def billable_microusd(url: str, tenant_id: str, multiplier: Decimal, now: datetime | None = None) -> int:
    """The database's billable sum this UTC month, from the ledger itself (not the rollups):
    successful requests' cost with the markup, in micro-dollars, rounding carried across periods
    as the relay carries it: floor(all through now) - floor(all before the month)."""
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with db.connect(url) as conn:
        row = conn.execute(
            """SELECT coalesce(sum(cost_usd) FILTER (WHERE start_time < %s), 0) AS before,
                      coalesce(sum(cost_usd), 0) AS through
               FROM litellm_usage WHERE tenant_id = %s AND status = 'success'""",
            (start, tenant_id),
        ).fetchone()

    def floor(value: Decimal) -> int:
        return int((value * 1_000_000 * multiplier).to_integral_value(ROUND_FLOOR))

    return floor(row["through"]) - floor(row["before"])


def ledger_cost(url: str, tenant_id: str, now: datetime | None = None) -> Decimal:
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS s FROM litellm_usage WHERE tenant_id = %s AND start_time >= %s",
            (tenant_id, start),
        ).fetchone()["s"]
