"""The console's read queries. Every page reads the rollups, never ``litellm_usage``:

- ``usage_daily`` (per day, tenant, model; maintained by the writer in the usage transaction),
- ``billing_accrual`` (billable cost and tokens per tenant and billing window; the hourly view),
- ``billing_outbox`` / ``billing_carry`` (what was sealed and reported),
- ``budget_leases`` (the budget store: live leases, pending spend, killed instances' doubt).

- ``usage_hourly`` (per hour and tenant: requests, errors, tokens, cost; the hourly view),
- ``usage_daily_attribution`` (per day, tenant and end user, tag or key).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import psycopg
from psycopg import sql

from billingproxy.billing import MICRO
from billingproxy.budgets import period_status
from billingproxy.budgets.scopes import end_user_scope, key_scope
from billingproxy.budgets.spend import IN_DOUBT
from billingproxy.prices import PriceStore, PriceVersion
from billingproxy.tenants import TenantStore, period_start

ZERO = Decimal(0)
LATE_AFTER = timedelta(minutes=10)  # a pending entry older than this missed several relay passes
# The attribution rollup's dimensions, in the order the pages show them.
ATTRIBUTION_DIMENSIONS = ("end_user", "key", "tag")


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def micro_floor(cost_usd: Decimal, multiplier: Decimal) -> int:
    """The billed amount in the cost meter's unit: floor(cost * 10^6 * markup) micro-dollars."""
    return int((Decimal(cost_usd) * MICRO * Decimal(multiplier)).to_integral_value(ROUND_FLOOR))


def error_rate(requests: int, failures: int, rejected: int) -> float | None:
    reached = requests - rejected
    return None if reached <= 0 else failures / reached


# ---- overview ----------------------------------------------------------------------------


def _tenant_filter(tenant_id: str | None, alias: str = "") -> sql.Composable:
    """``AND tenant_id = %(tenant)s`` for one tenant, nothing for all: two plain statements, so a
    prepared (generic) plan never has to cover both cases."""
    return sql.SQL(f"AND {alias}tenant_id = %(tenant)s") if tenant_id else sql.SQL("")


def daily_series(conn: psycopg.Connection, start: date, end: date, tenant_id: str | None = None) -> list[dict]:
    """Per day in [start, end]: requests, failures, rejected, tokens, cost; days without usage as zeros."""
    rows = conn.execute(
        sql.SQL(
            """WITH u AS (
                   SELECT day, sum(requests) AS requests, sum(failures) AS failures, sum(rejected) AS rejected,
                          sum(total_tokens) AS tokens, sum(cost_usd) AS cost_usd
                   FROM usage_daily WHERE day >= %(start)s AND day <= %(end)s {tenant} GROUP BY day)
               SELECT d.day::date AS day, coalesce(u.requests, 0)::bigint AS requests,
                      coalesce(u.failures, 0)::bigint AS failures, coalesce(u.rejected, 0)::bigint AS rejected,
                      coalesce(u.tokens, 0)::bigint AS tokens, coalesce(u.cost_usd, 0) AS cost_usd
               FROM generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS d(day)
               LEFT JOIN u ON u.day = d.day::date
               ORDER BY d.day"""
        ).format(tenant=_tenant_filter(tenant_id)),
        {"start": start, "end": end, "tenant": tenant_id},
    ).fetchall()
    for row in rows:
        row["error_rate"] = error_rate(row["requests"], row["failures"], row["rejected"])
    return rows


def hourly_series(conn: psycopg.Connection, start: datetime, end: datetime, tenant_id: str | None = None) -> list[dict]:
    """Per hour in [start, end): requests, failures, rejected, tokens, cost; hours without usage as zeros."""
    rows = conn.execute(
        sql.SQL(
            """WITH u AS (
                   SELECT hour, sum(requests) AS requests, sum(failures) AS failures, sum(rejected) AS rejected,
                          sum(total_tokens) AS tokens, sum(cost_usd) AS cost_usd
                   FROM usage_hourly WHERE hour >= %(start)s AND hour < %(end)s {tenant} GROUP BY hour)
               SELECT h.hour, coalesce(u.requests, 0)::bigint AS requests,
                      coalesce(u.failures, 0)::bigint AS failures, coalesce(u.rejected, 0)::bigint AS rejected,
                      coalesce(u.tokens, 0)::bigint AS tokens, coalesce(u.cost_usd, 0) AS cost_usd
               FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                                    interval '1 hour') AS h(hour)
               LEFT JOIN u ON u.hour = h.hour
               ORDER BY h.hour"""
        ).format(tenant=_tenant_filter(tenant_id)),
        {"start": start, "end": end, "tenant": tenant_id},
    ).fetchall()
    for row in rows:
        row["error_rate"] = error_rate(row["requests"], row["failures"], row["rejected"])
    return rows


def top_tenants(conn: psycopg.Connection, start: date, limit: int = 10) -> list[dict]:
    return conn.execute(
        """WITH top AS (
               SELECT tenant_id, sum(requests)::bigint AS requests, sum(failures)::bigint AS failures,
                      sum(rejected)::bigint AS rejected, sum(total_tokens)::bigint AS tokens, sum(cost_usd) AS cost_usd
               FROM usage_daily WHERE day >= %s GROUP BY tenant_id ORDER BY sum(cost_usd) DESC, tenant_id LIMIT %s)
           SELECT top.*, t.name, t.status FROM top LEFT JOIN tenants t ON t.id = top.tenant_id
           ORDER BY top.cost_usd DESC, top.tenant_id""",
        (start, limit),
    ).fetchall()


def by_model(conn: psycopg.Connection, start: date, tenant_id: str | None = None, limit: int = 50) -> list[dict]:
    rows = conn.execute(
        sql.SQL(
            """SELECT model, sum(requests)::bigint AS requests, sum(failures)::bigint AS failures,
                  sum(rejected)::bigint AS rejected, sum(prompt_tokens)::bigint AS prompt_tokens,
                  sum(completion_tokens)::bigint AS completion_tokens, sum(total_tokens)::bigint AS tokens,
                  sum(cost_usd) AS cost_usd
           FROM usage_daily WHERE day >= %(start)s {tenant}
           GROUP BY model ORDER BY sum(cost_usd) DESC, model LIMIT %(limit)s"""
        ).format(tenant=_tenant_filter(tenant_id)),
        {"start": start, "tenant": tenant_id, "limit": limit},
    ).fetchall()
    for row in rows:
        row["error_rate"] = error_rate(row["requests"], row["failures"], row["rejected"])
    return rows


def by_dimension(conn: psycopg.Connection, dimension: str, tenant_id: str, start: date, limit: int = 50) -> list[dict]:
    """A tenant's usage per end user, tag or key since ``start`` (the attribution rollup: one range
    scan of its primary key); the ``limit`` most expensive values."""
    return conn.execute(
        """SELECT value, sum(requests)::bigint AS requests, sum(total_tokens)::bigint AS tokens,
                  sum(cost_usd) AS cost_usd
           FROM usage_daily_attribution WHERE tenant_id = %s AND dimension = %s AND day >= %s
           GROUP BY value ORDER BY sum(cost_usd) DESC, value LIMIT %s""",
        (tenant_id, dimension, start, limit),
    ).fetchall()


def attribution(conn: psycopg.Connection, tenant_id: str, start: date) -> dict[str, list[dict]]:
    """The tenant's usage by each attribution dimension that has any rows this period."""
    found = {dim: by_dimension(conn, dim, tenant_id, start) for dim in ATTRIBUTION_DIMENSIONS}
    return {dim: rows for dim, rows in found.items() if rows}


def budget_health(conn: psycopg.Connection) -> list[dict]:
    """Per proxy instance (lease holder): live leases (every level), tenants and tenant budget held,
    last renewal. Key and end-user scopes (``key:<tenant>:…``, ``end_user:<tenant>:…``) count
    under their tenant; what they hold is not added to held_usd (it overlaps the tenant's)."""
    return conn.execute(
        """SELECT holder, count(*) FILTER (WHERE expires_at > now())::int AS live_leases,
                  count(DISTINCT CASE WHEN tenant_id LIKE '%%:%%' THEN split_part(tenant_id, ':', 2)
                                      ELSE tenant_id END) FILTER (WHERE expires_at > now())::int AS tenants,
                  coalesce(sum(amount) FILTER (WHERE expires_at > now() AND tenant_id NOT LIKE '%%:%%'), 0)
                      AS held_usd,
                  max(expires_at) AS last_expiry, bool_or(expires_at > now()) AS alive
           FROM budget_leases
           WHERE expires_at > now() - interval '1 day'
           GROUP BY holder ORDER BY alive DESC, holder LIMIT 100"""
    ).fetchall()


def totals(series: list[dict]) -> dict[str, Any]:
    requests = sum(r["requests"] or 0 for r in series)
    failures = sum(r["failures"] or 0 for r in series)
    rejected = sum(r["rejected"] or 0 for r in series)
    return {
        "requests": requests,
        "failures": failures,
        "rejected": rejected,
        "cost_usd": sum((r["cost_usd"] for r in series), ZERO),
        "error_rate": error_rate(requests, failures, rejected),
    }


# ---- tenants -----------------------------------------------------------------------------


def tenants_with_spend(conn: psycopg.Connection, now: datetime) -> list[dict]:
    """Every tenant with its spend this budget period, held (reserved) and remaining budget.

    Spend is the usage rollup plus live instances' pending spend and killed instances' doubt, as
    the budget store counts it (``IN_DOUBT``)."""
    # One range scan of the month's rollup rows (contiguous on the (day, tenant, model) key), not a
    # lookup per tenant (a tenant's rollup rows are spread over the table); all-time sums only for
    # tenants with a 'total' budget.
    rows = conn.execute(
        """WITH m AS (
               SELECT tenant_id, sum(cost_usd) AS cost, sum(requests) AS requests,
                      sum(cost_usd) FILTER (WHERE day >= %(today)s) AS today_cost
               FROM usage_daily WHERE day >= %(month_day)s GROUP BY tenant_id),
           alltime AS (
               SELECT tenant_id, sum(cost_usd) AS cost FROM usage_daily
               WHERE tenant_id IN (SELECT id FROM tenants WHERE budget_period = 'total') GROUP BY tenant_id),
           held AS (
               SELECT tenant_id, period_start,
                      sum(amount - pending) FILTER (WHERE expires_at > now()) AS held,
                      sum(pending) FILTER (WHERE expires_at > now()) AS pending,
                      sum(amount) FILTER (WHERE expires_at <= now()) AS in_doubt
               FROM budget_leases
               WHERE expires_at > now() - %(in_doubt)s GROUP BY tenant_id, period_start),
           t AS (
               SELECT id, name, status, budget_usd, budget_period, stripe_customer_id, price_multiplier, created_at,
                      CASE budget_period WHEN 'monthly' THEN %(month)s::timestamptz
                                         WHEN 'daily' THEN %(day)s::timestamptz
                                         ELSE %(epoch)s::timestamptz END AS period_start
               FROM tenants)
           SELECT t.*,
                  coalesce(CASE t.budget_period WHEN 'monthly' THEN m.cost WHEN 'daily' THEN m.today_cost
                           ELSE a.cost END, 0) + coalesce(h.pending, 0) + coalesce(h.in_doubt, 0) AS spent_usd,
                  coalesce(h.held, 0) AS reserved_usd, coalesce(m.cost, 0) AS month_cost_usd,
                  coalesce(m.requests, 0)::bigint AS month_requests
           FROM t
           LEFT JOIN m ON m.tenant_id = t.id
           LEFT JOIN alltime a ON a.tenant_id = t.id
           LEFT JOIN held h ON h.tenant_id = t.id AND h.period_start = t.period_start
           ORDER BY t.created_at, t.id""",
        {
            "month": period_start("monthly", now),
            "in_doubt": IN_DOUBT,
            "day": period_start("daily", now),
            "epoch": period_start("total", now),
            "month_day": month_start(now).date(),
            "today": period_start("daily", now).date(),
        },
    ).fetchall()
    for row in rows:
        budget = row["budget_usd"]
        row["remaining_usd"] = None if budget is None else max(budget - row["spent_usd"] - row["reserved_usd"], ZERO)
        row["used_ratio"] = None if not budget else float(row["spent_usd"] / budget)
    return rows


def tenant_budget(conn: psycopg.Connection, tenant, now: datetime) -> dict:
    start = period_start(tenant.budget_period, now)
    status = period_status(conn, tenant.id, start, tenant.budget_usd)
    budget = tenant.budget_usd
    status["used_ratio"] = None if not budget else float(status["spent_usd"] / budget)
    status["budget_usd"] = budget
    status["budget_period"] = tenant.budget_period
    return status


def key_budgets(conn: psycopg.Connection, tenant_id: str, keys: list, now: datetime) -> dict[str, dict]:
    """Per key with a budget of its own: this period's spend, reservations and what is left."""
    found = {}
    for key in keys:
        if key.budget_usd is None:
            continue
        start = period_start(key.budget_period, now)
        status = period_status(conn, key_scope(tenant_id, key.id), start, key.budget_usd)
        found[key.id] = {**status, "budget_usd": key.budget_usd, "budget_period": key.budget_period}
    return found


def end_user_budgets(
    conn: psycopg.Connection, tenant, overrides: list, spenders: list[str], now: datetime, limit: int = 50
) -> list[dict]:
    """The end users a budget applies to, each with this period's spend and what is left: every
    override first, then the end users with spend this month under the tenant's default."""
    own = {o.end_user: o for o in overrides}
    rows = []
    for end_user in [*own, *(name for name in spenders if name not in own)][:limit]:
        override = own.get(end_user)
        if override is not None:
            budget, period = override.budget_usd, override.budget_period or tenant.end_user_budget_period
        else:
            budget, period = tenant.end_user_budget_usd, tenant.end_user_budget_period
        status = {"spent_usd": None, "reserved_usd": None, "remaining_usd": None}
        if budget is not None:
            status = period_status(conn, end_user_scope(tenant.id, end_user), period_start(period, now), budget)
        rows.append(
            {"end_user": end_user, "source": "override" if override else "default", "budget_usd": budget}
            | {"budget_period": period, **status}
        )
    return [r for r in rows if r["budget_usd"] is not None or r["source"] == "override"]


# ---- billing -----------------------------------------------------------------------------


def invoice_preview(conn: psycopg.Connection, tenant, cost_meter: str | None, now: datetime) -> dict:
    """The current calendar month (UTC): the billable cost (successful requests, as accrued for
    billing), the amount with the tenant's markup in micro-dollars, and what the outbox has
    already reported to the sink for the month's windows (entries ``sent``), pending or failed.

    Reads ``billing_accrual`` for this tenant only (its primary key), up to the period's end."""
    start = month_start(now)
    end = next_month(start)
    accrued = conn.execute(
        """SELECT coalesce(sum(cost_usd) FILTER (WHERE window_start >= %(start)s), 0) AS cost_usd,
                  coalesce(sum(cost_usd) FILTER (WHERE window_start < %(start)s), 0) AS before_usd,
                  coalesce(sum(input_tokens) FILTER (WHERE window_start >= %(start)s), 0)::bigint AS input_tokens,
                  coalesce(sum(output_tokens) FILTER (WHERE window_start >= %(start)s), 0)::bigint AS output_tokens
           FROM billing_accrual WHERE tenant_id = %(tenant)s AND window_start < %(end)s""",
        {"tenant": tenant.id, "start": start, "end": end},
    ).fetchone()
    outbox = conn.execute(
        """SELECT coalesce(sum(value) FILTER (WHERE status IN ('sent', 'reconciled')), 0)::bigint AS reported,
                  coalesce(sum(value) FILTER (WHERE status = 'pending'), 0)::bigint AS pending,
                  coalesce(sum(value) FILTER (WHERE status IN ('failed', 'reconcile')), 0)::bigint AS in_doubt,
                  max(sent_at) AS last_sent_at
           FROM billing_outbox
           WHERE customer_id = ANY(%s) AND meter = %s AND window_start >= %s AND window_start < %s
             AND tenant_id = %s""",
        ([c for c in (tenant.stripe_customer_id, tenant.id) if c], cost_meter or "", start, end, tenant.id),
    ).fetchone()
    multiplier = Decimal(1)  # rate cards are in the rows' costs already (the price book)
    # The relay carries the markup's sub-micro-dollar rounding across windows (billing_carry), so
    # a period is billed floor(everything through it) - floor(everything before it): the same
    # micro-dollars the sink receives for the period's windows.
    before = accrued["before_usd"]
    billable = micro_floor(before + accrued["cost_usd"], multiplier) - micro_floor(before, multiplier)
    return {
        "period_start": start,
        "period_end": end,
        "cost_usd": accrued["cost_usd"],
        "input_tokens": accrued["input_tokens"],
        "output_tokens": accrued["output_tokens"],
        "price_multiplier": multiplier,
        "billable_microusd": billable,
        "billable_usd": Decimal(billable) / MICRO,
        "reported_microusd": outbox["reported"],
        "reported_usd": Decimal(outbox["reported"]) / MICRO,
        "pending_microusd": outbox["pending"],
        "in_doubt_microusd": outbox["in_doubt"],
        "unreported_microusd": max(billable - outbox["reported"], 0),
        "last_sent_at": outbox["last_sent_at"],
        "cost_meter": cost_meter,
        "customer": tenant.stripe_customer_id,
    }


_UNSENT = """SELECT status, count(*)::bigint AS entries, coalesce(sum(value), 0)::bigint AS value,
                    min(created_at) AS oldest, max(created_at) AS newest,
                    count(*) FILTER (WHERE status = 'pending' AND created_at < %s)::bigint AS late_entries,
                    coalesce(sum(value) FILTER (WHERE status = 'pending' AND created_at < %s), 0)::bigint AS late_value,
                    min(created_at) FILTER (WHERE status = 'pending' AND created_at < %s) AS late_oldest,
                    max(created_at) FILTER (WHERE status = 'pending' AND created_at < %s) AS late_newest
             FROM billing_outbox WHERE status <> 'sent' GROUP BY status"""


def outbox_by_status(conn: psycopg.Connection, now: datetime) -> list[dict]:
    """Entries per status. Everything not yet sent is read exactly (a partial index holds just
    those); the ``sent`` value is derived from ``billing_carry`` (every unit ever put into a usage
    entry) minus the unsent ones, plus sent corrections, and its count is the planner's estimate
    of the table size minus the unsent entries: the outbox grows by one entry per tenant-minute,
    so the page never counts it row by row."""
    late_before = now - LATE_AFTER
    rows = conn.execute(_UNSENT, (late_before,) * 4).fetchall()
    by_status = {row["status"]: row for row in rows}
    late = {"entries": 0, "value": 0, "oldest": None, "newest": None}
    for row in rows:
        if row["late_entries"]:
            late = {
                "entries": row["late_entries"],
                "value": row["late_value"],
                "oldest": row["late_oldest"],
                "newest": row["late_newest"],
            }
    totals = conn.execute(
        """SELECT (SELECT coalesce(sum(reported), 0) FROM billing_carry)::bigint AS carried,
                  (SELECT coalesce(sum(value), 0) FROM billing_outbox WHERE status <> 'sent' AND kind = 'usage')::bigint
                      AS unsent_usage,
                  (SELECT coalesce(sum(value), 0) FROM billing_outbox WHERE kind = 'fix' AND status = 'sent')::bigint
                      AS sent_fixes,
                  (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'billing_outbox'::regclass)
                      AS estimate,
                  (SELECT max(created_at) FROM (SELECT created_at FROM billing_outbox WHERE status = 'sent'
                                                ORDER BY id DESC LIMIT 1) s) AS newest_sent"""
    ).fetchone()
    unsent_count = sum(row["entries"] for row in rows)
    sent = {
        "entries": max(totals["estimate"] - unsent_count, 0),
        "estimated": True,
        "value": totals["carried"] - totals["unsent_usage"] + totals["sent_fixes"],
        "oldest": None,
        "newest": totals["newest_sent"],
    }
    out = []
    for status in ("pending", "late", "failed", "reconcile", "sent", "reconciled", "cancelled"):
        if status == "late":
            row = late
        elif status == "sent":
            row = sent
        else:
            row = by_status.get(status) or {"entries": 0, "value": 0, "oldest": None, "newest": None}
        out.append({"estimated": False, **row, "status": status})
    return out


def relay_activity(conn: psycopg.Connection) -> dict:
    """What the relay did last. No pass log exists, so the outbox tells it: the newest entry
    (sealed), and the latest confirmation among the newest 5,000 entries (by id, the primary key)."""
    row = conn.execute(
        """SELECT (SELECT created_at FROM billing_outbox ORDER BY id DESC LIMIT 1) AS last_sealed_at,
                  (SELECT max(sent_at) FROM (SELECT sent_at FROM billing_outbox ORDER BY id DESC LIMIT 5000) s)
                      AS last_sent_at,
                  (SELECT count(*) FROM billing_accrual
                   WHERE cost_usd <> sealed_cost_usd OR input_tokens <> sealed_input_tokens
                         OR output_tokens <> sealed_output_tokens)::bigint AS unsealed_windows,
                  (SELECT min(window_start) FROM billing_accrual
                   WHERE cost_usd <> sealed_cost_usd OR input_tokens <> sealed_input_tokens
                         OR output_tokens <> sealed_output_tokens) AS oldest_unsealed"""
    ).fetchone()
    row["recent_errors"] = conn.execute(
        """SELECT identifier, tenant_id, customer_id, status, attempts, last_error, created_at
           FROM billing_outbox
           WHERE status <> 'sent' AND (status IN ('failed', 'reconcile') OR last_error IS NOT NULL)
           ORDER BY id DESC LIMIT 10"""
    ).fetchall()
    return row


def customers_reconciliation(conn: psycopg.Connection, cost_meter: str | None) -> list[dict]:
    """Per tenant with a customer: the database's billable sum (everything accrued, with markup,
    floored to micro-dollars) vs what was reported to the sink and what is in flight.

    Sealed usage is carried exactly in ``billing_carry.accrued`` (markup applied at sealing) and
    ``billing_carry.reported`` counts every unit put into entries; not-yet-sealed usage comes from
    the partial index of unsealed accrual windows (at today's markup), and the entries not sent
    yet (pending, failed, in doubt) and corrections from the outbox's small partial indexes."""
    meter = cost_meter or ""
    # The planner cannot estimate the unsealed-window predicate (column <> column) and would scan
    # every accrual window in parallel; the partial index holds only the unsealed ones (14 ms vs
    # 150 ms at a million windows). Off for this statement only (SET LOCAL, reset right after).
    conn.execute("SET LOCAL enable_seqscan = off")
    rows = conn.execute(
        """WITH unsealed AS (
               SELECT tenant_id, sum(cost_usd - sealed_cost_usd) AS cost
               FROM billing_accrual
               WHERE cost_usd <> sealed_cost_usd OR input_tokens <> sealed_input_tokens
                     OR output_tokens <> sealed_output_tokens
               GROUP BY tenant_id),
           unsent AS (
               SELECT tenant_id, sum(value) FILTER (WHERE kind = 'usage' AND status <> 'reconciled') AS not_reported,
                      sum(value) FILTER (WHERE status = 'pending') AS pending,
                      sum(value) FILTER (WHERE status IN ('failed', 'reconcile')) AS in_doubt
               FROM billing_outbox WHERE status <> 'sent' AND meter = %(meter)s GROUP BY tenant_id),
           fixes AS (
               SELECT tenant_id, sum(value) FILTER (WHERE status = 'sent') AS sent
               FROM billing_outbox WHERE kind = 'fix' AND meter = %(meter)s GROUP BY tenant_id)
           SELECT t.id AS tenant_id, t.name, t.stripe_customer_id AS customer_id,
                  coalesce(c.accrued, 0) AS sealed_exact, coalesce(c.reported, 0)::bigint AS sealed_units,
                  coalesce(u.cost, 0) AS unsealed_cost_usd,
                  (coalesce(c.reported, 0) - coalesce(n.not_reported, 0) + coalesce(f.sent, 0))::bigint AS reported,
                  coalesce(n.pending, 0)::bigint AS pending, coalesce(n.in_doubt, 0)::bigint AS in_doubt
           FROM tenants t
           LEFT JOIN billing_carry c ON c.tenant_id = t.id AND c.meter = %(meter)s
           LEFT JOIN unsealed u ON u.tenant_id = t.id
           LEFT JOIN unsent n ON n.tenant_id = t.id
           LEFT JOIN fixes f ON f.tenant_id = t.id
           WHERE t.stripe_customer_id IS NOT NULL
           ORDER BY t.name""",
        {"meter": meter},
    ).fetchall()
    conn.execute("SET LOCAL enable_seqscan = on")
    for row in rows:
        exact = Decimal(row["sealed_exact"]) + Decimal(row["unsealed_cost_usd"]) * MICRO
        row["billable"] = int(exact.to_integral_value(ROUND_FLOOR))
        row["difference"] = row["billable"] - row["reported"]
    return rows


def price_book(conn: psycopg.Connection, configured: list[str], at: datetime, tenant_id: str | None = None) -> dict:
    """The price book as the proxies bill from it: per model the version in force at ``at`` and the
    versions scheduled after it, the configured models with none in force (refused: 503
    ``model_not_priced``), and the rate cards (one tenant's, or everyone's) with their state."""
    store = PriceStore(conn)
    in_force: dict[str, PriceVersion] = {}
    scheduled: list[PriceVersion] = []
    for version in store.versions():  # by model, then effective_from: the last one not after `at` wins
        if version.effective_from <= at:
            in_force[version.model] = version
        else:
            scheduled.append(version)
    names = {t.id: t.name for t in TenantStore(conn).list_tenants()}
    cards = []
    for card in store.rate_cards(tenant_id):
        state = "active" if card.covers(at) else ("scheduled" if card.valid_from > at else "ended")
        cards.append({**card.to_json(), "tenant_name": names.get(card.tenant_id, card.tenant_id), "state": state})
    conn.commit()
    return {
        "in_force": [in_force[m].to_json() for m in sorted(in_force)],
        "scheduled": [v.to_json() for v in scheduled],
        "unpriced": sorted(set(configured) - set(in_force)),
        "cards": cards,
        "at": at,
    }
