"""The operator console (``/console``), the tenant portal (``/portal/…``) and the portal-link admin API.

Mounted into the billing service by ``create_app`` (``app.include_router(console_router(...))``);
it shares the service's connection pool, master key and billing settings. Pages are rendered on
the server (Jinja2), charts are inline SVG, there is no JavaScript: the CSP forbids scripts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from billingproxy.config import BillingSettings
from billingproxy.errors import InvalidInput, NotFound
from billingproxy.metering import PriceError
from billingproxy.prices import config_models
from billingproxy.service.console import charts, pages
from billingproxy.service.console.links import MAX_DAYS, LinkGone, PortalLinks, portal_url
from billingproxy.service.console.session import (
    COOKIE,
    DEFAULT_TTL_S,
    LOGIN_COOKIE,
    Session,
    SessionSigner,
    csrf_matches,
)
from billingproxy.tenants import TenantStore
from billingproxy.tokens import constant_time_equals, generate_token

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; script-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # portal URLs carry their token: never leak it in a Referer
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


class _SecureRoute(APIRoute):
    """Every console, portal and admin response carries the security headers (no caching)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if request.url.path.endswith("/static/console.css"):
                response.headers["Cache-Control"] = "public, max-age=3600"
                del response.headers["Pragma"]
            return response

        return secured


class PortalLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, as on every admin route

    expires_in_days: float = Field(default=30.0, gt=0, le=MAX_DAYS)


# ---- formatting for the templates ----------------------------------------------------------


def usd(value: Any, places: int | None = None) -> str:
    if value is None:
        return "—"
    amount = Decimal(value)
    if places is None:  # whole cents as cents; small amounts to the micro-dollar, as they are billed
        places = 2 if abs(amount) >= 100 or amount == amount.quantize(Decimal("0.01")) else 6
    return f"${amount:,.{places}f}"


def num(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f} %"


def when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(usd=usd, num=num, pct=pct, when=when)
    templates.env.globals["micro_to_usd"] = lambda v: Decimal(int(v or 0)) / pages.MICRO
    return templates


def _parse_day(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"dates look like 2026-11-30, got {value!r}") from None


def _optional_int(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"expected a whole number, got {value!r}") from None


def _optional_float(value: str | None, what: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None


def console_router(
    pool: ConnectionPool,
    admin_key: str | None,
    billing: BillingSettings,
    *,
    session_ttl_s: int = DEFAULT_TTL_S,
    price_config: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    """The console's routes. Without a master key the console refuses every login."""
    router = APIRouter(route_class=_SecureRoute, include_in_schema=False)
    templates = _templates()
    signer = SessionSigner(admin_key or generate_token(), session_ttl_s)  # no key: nobody can log in
    cost_meter = next((m.event_name for m in billing.meters if m.measure == "cost_microusd"), None)
    css = (HERE / "static" / "console.css").read_bytes()

    # ---- helpers ---------------------------------------------------------------------------

    def current_session(request: Request) -> Session | None:
        return signer.verify(request.cookies.get(COOKIE))

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        session = current_session(request)
        return templates.TemplateResponse(
            request,
            name,
            {"session": session, "csrf": session.csrf if session else "", "meter": cost_meter, **context},
            status_code=status,
        )

    def message(request: Request, status: int, title: str, text: str) -> HTMLResponse:
        return render(request, "message.html", {"title": title, "text": text}, status)

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)

    async def checked_form(request: Request) -> tuple[Session | None, dict[str, str] | Response]:
        """The session and the form of a console POST, or the response refusing it."""
        session = current_session(request)
        if session is None:
            return None, to_login(request)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not csrf_matches(session.csrf, form.get("csrf")):
            return session, message(request, 403, "Forbidden", "The form's CSRF token is missing or wrong.")
        return session, form

    def db(work: Callable[[Any], Any]) -> Any:
        with pool.connection() as conn:
            return work(conn)

    def tenant_page_context(conn: Any, ref: str, **extra: Any) -> dict[str, Any]:
        store = TenantStore(conn)
        tenant = store.get_tenant(ref)
        at = now()
        month = pages.month_start(at)
        days = pages.daily_series(conn, (at - timedelta(days=30)).date(), at.date(), tenant.id)
        models = pages.by_model(conn, month.date(), tenant.id)
        dims = pages.attribution(conn, tenant.id, month.date())
        keys = store.list_keys(tenant.id)
        links = PortalLinks(conn).list(tenant.id)
        spenders = [r["value"] for r in dims.get("end_user", []) if r["value"]]  # this month's, by cost
        overrides = store.list_end_user_budgets(tenant.id)
        context = {
            "key_budgets": pages.key_budgets(conn, tenant.id, keys, at),
            "end_user_budgets": pages.end_user_budgets(conn, tenant, overrides, spenders, at),
            "tenant": tenant,
            "budget": pages.tenant_budget(conn, tenant, at),
            "days": days,
            "day_chart": charts.bar_chart(
                [d["cost_usd"] for d in days], [d["day"].strftime("%m-%d") for d in days], title="Spend per day"
            ),
            "models": models,
            "month_total": pages.totals(models),
            "dims": dims,
            "keys": keys,
            "links": links,
            "invoice": pages.invoice_preview(conn, tenant, cost_meter, at),
            "month": month,
            "now": at,
            **extra,
        }
        conn.commit()
        return context

    # ---- static ----------------------------------------------------------------------------

    @router.get("/console/static/console.css")
    def stylesheet() -> Response:
        return Response(css, media_type="text/css")

    # ---- login / logout --------------------------------------------------------------------

    @router.get("/console/login")
    def login_form(request: Request, next: str = "/console") -> Response:
        token = generate_token()
        response = render(request, "login.html", {"login_csrf": token, "next": _safe_next(next), "error": None})
        response.set_cookie(
            LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="strict", path="/console",
            secure=_https(request),
        )  # fmt: skip
        return response

    @router.post("/console/login")
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not csrf_matches(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return message(request, 403, "Forbidden", "The login form expired; reload it and try again.")
        given = form.get("master_key", "")
        if not admin_key or not given or not constant_time_equals(given, admin_key):
            token = generate_token()
            response = render(
                request,
                "login.html",
                {"login_csrf": token, "next": _safe_next(form.get("next")), "error": "That is not the master key."},
                401,
            )
            response.set_cookie(
                LOGIN_COOKIE,
                token,
                max_age=600,
                httponly=True,
                samesite="strict",
                path="/console",
                secure=_https(request),
            )
            response.delete_cookie(COOKIE, path="/console")
            return response
        _, cookie = signer.issue()
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        response.set_cookie(
            COOKIE, cookie, max_age=signer.ttl_s, httponly=True, samesite="strict", path="/console",
            secure=_https(request),
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @router.post("/console/logout")
    async def logout(request: Request) -> Response:
        _, form = await checked_form(request)
        if isinstance(form, Response):
            return form
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # ---- overview --------------------------------------------------------------------------

    @router.get("/console")
    def overview(request: Request, by: str = "day") -> Response:
        if current_session(request) is None:
            return to_login(request)
        by = "hour" if by == "hour" else "day"

        def work(conn: Any) -> dict[str, Any]:
            at = now()
            month = pages.month_start(at)
            if by == "hour":
                end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
                series = pages.hourly_series(conn, end - timedelta(hours=48), end)
                labels = [r["hour"].astimezone(UTC).strftime("%H:00") for r in series]
            else:
                series = pages.daily_series(conn, (at - timedelta(days=29)).date(), at.date())
                labels = [r["day"].strftime("%m-%d") for r in series]
            month_models = pages.by_model(conn, month.date(), limit=1000)  # every model: the month's totals
            tenants = pages.tenants_with_spend(conn, at)
            context = {
                "by": by,
                "series": series,
                "spend_chart": charts.bar_chart([r["cost_usd"] for r in series], labels, title=f"Spend per {by}"),
                "requests_chart": charts.bar_chart(
                    [r["requests"] for r in series], labels, title=f"Requests per {by}", fmt=lambda v: f"{v:,.0f}",
                    color="#2f8f5b",
                ),
                "errors_chart": charts.bar_chart(
                    [r["error_rate"] for r in series], labels, title=f"Error rate per {by}",
                    fmt=lambda v: f"{v * 100:.0f}%", color="#c94a35",
                ),
                "month": month,
                "month_totals": pages.totals(month_models),
                "top_tenants": pages.top_tenants(conn, month.date()),
                "top_models": month_models[:10],
                "instances": pages.budget_health(conn),
                "near_budget": sorted(
                    (t for t in tenants if t["used_ratio"] is not None and t["used_ratio"] >= 0.8),
                    key=lambda t: -t["used_ratio"],
                )[:20],
                "tenant_count": len(tenants),
                "suspended": sum(1 for t in tenants if t["status"] == "suspended"),
            }  # fmt: skip
            conn.commit()
            return context

        return render(request, "overview.html", db(work))

    # ---- tenants ---------------------------------------------------------------------------

    @router.get("/console/tenants")
    def tenants_page(request: Request) -> Response:
        if current_session(request) is None:
            return to_login(request)
        rows = db(lambda conn: pages.tenants_with_spend(conn, now()))
        return render(request, "tenants.html", {"tenants": rows, "error": None, "form": {}})

    @router.post("/console/tenants")
    async def tenant_create(request: Request) -> Response:
        _, form = await checked_form(request)
        if isinstance(form, Response):
            return form

        def work(conn: Any) -> Any:
            return TenantStore(conn).create_tenant(
                form.get("name", "").strip(),
                models=form.get("models") or None,
                budget_usd=form.get("budget_usd") or None,
                budget_period=form.get("budget_period") or "monthly",
                rpm_limit=_optional_int(form.get("rpm_limit")),
                tpm_limit=_optional_int(form.get("tpm_limit")),
                stripe_customer_id=form.get("stripe_customer_id") or None,
            )

        try:
            created = await run_in_threadpool(db, work)
        except InvalidInput as exc:
            rows = await run_in_threadpool(db, lambda conn: pages.tenants_with_spend(conn, now()))
            return render(request, "tenants.html", {"tenants": rows, "error": str(exc), "form": form}, 400)
        return RedirectResponse(f"/console/tenants/{created.id}", status_code=303)

    @router.get("/console/tenants/{ref}")
    def tenant_page(request: Request, ref: str) -> Response:
        if current_session(request) is None:
            return to_login(request)
        try:
            return render(request, "tenant.html", db(lambda conn: tenant_page_context(conn, ref)))
        except NotFound:
            return message(request, 404, "Not found", "No such tenant.")

    async def tenant_action(request: Request, ref: str, action: Callable[[Any, dict], dict | None]) -> Response:
        """A POST on a tenant page: CSRF-checked; shows the tenant page again (with a one-time
        secret when the action made one) or redirects back to it."""
        _, form = await checked_form(request)
        if isinstance(form, Response):
            return form

        def work(conn: Any) -> tuple[str, dict | None]:
            tenant = TenantStore(conn).get_tenant(ref)
            return tenant.id, action(conn, {**form, "tenant_id": tenant.id})

        try:
            tenant_id, shown = await run_in_threadpool(db, work)
        except NotFound:
            return message(request, 404, "Not found", "No such tenant, key or link.")
        except InvalidInput as exc:
            problem = str(exc)
            context = await run_in_threadpool(db, lambda conn: tenant_page_context(conn, ref, error=problem))
            return render(request, "tenant.html", context, 400)
        if shown is None:
            return RedirectResponse(f"/console/tenants/{tenant_id}", status_code=303)
        context = await run_in_threadpool(db, lambda conn: tenant_page_context(conn, tenant_id, shown=shown))
        return render(request, "tenant.html", context)

    @router.post("/console/tenants/{ref}/suspend")
    async def tenant_suspend(request: Request, ref: str) -> Response:
        return await tenant_action(
            request, ref, lambda conn, f: TenantStore(conn).set_status(f["tenant_id"], "suspended") and None
        )

    @router.post("/console/tenants/{ref}/resume")
    async def tenant_resume(request: Request, ref: str) -> Response:
        return await tenant_action(
            request, ref, lambda conn, f: TenantStore(conn).set_status(f["tenant_id"], "active") and None
        )

    @router.post("/console/tenants/{ref}/keys")
    async def key_create(request: Request, ref: str) -> Response:
        def create(conn: Any, form: dict) -> dict:
            days = _optional_float(form.get("expires_in_days"), "expiry (days)")
            if days is not None and days <= 0:
                raise InvalidInput("expiry must be a positive number of days")
            expires = now() + timedelta(days=days) if days else None
            key, token = TenantStore(conn).create_key(
                form["tenant_id"], name=form.get("name") or None, expires_at=expires
            )
            return {"kind": "token", "key": key, "secret": token}

        return await tenant_action(request, ref, create)

    def _key_of_tenant(conn: Any, key_id: str, tenant_id: str) -> None:
        if TenantStore(conn).get_key(key_id).tenant_id != tenant_id:
            raise NotFound(f"no key with id {key_id!r} for this tenant")

    @router.post("/console/tenants/{ref}/keys/{key_id}/rotate")
    async def key_rotate(request: Request, ref: str, key_id: str) -> Response:
        def rotate(conn: Any, form: dict) -> dict:
            _key_of_tenant(conn, key_id, form["tenant_id"])
            grace = _optional_float(form.get("grace_hours"), "grace (hours)")
            new_key, token, old = TenantStore(conn).rotate_key(
                key_id, grace=timedelta(hours=24 if grace is None else grace)
            )
            return {"kind": "token", "key": new_key, "secret": token, "replaces": old}

        return await tenant_action(request, ref, rotate)

    @router.post("/console/tenants/{ref}/keys/{key_id}/revoke")
    async def key_revoke(request: Request, ref: str, key_id: str) -> Response:
        def revoke(conn: Any, form: dict) -> None:
            _key_of_tenant(conn, key_id, form["tenant_id"])
            TenantStore(conn).revoke_key(key_id)

        return await tenant_action(request, ref, revoke)

    @router.post("/console/tenants/{ref}/portal-links")
    async def link_create(request: Request, ref: str) -> Response:
        base = _base_url(request)

        def create(conn: Any, form: dict) -> dict:
            days = _optional_float(form.get("expires_in_days"), "expiry (days)") or 30.0
            link, token = PortalLinks(conn).create(form["tenant_id"], expires_in_days=days)
            return {"kind": "link", "link": link, "secret": portal_url(base, token)}

        return await tenant_action(request, ref, create)

    @router.post("/console/tenants/{ref}/portal-links/{link_id}/revoke")
    async def link_revoke(request: Request, ref: str, link_id: str) -> Response:
        def revoke(conn: Any, form: dict) -> None:
            if not any(link.id == link_id for link in PortalLinks(conn).list(form["tenant_id"])):
                raise NotFound(f"no portal link {link_id!r} for this tenant")
            PortalLinks(conn).revoke(link_id)

        return await tenant_action(request, ref, revoke)

    @router.get("/console/tenants/{ref}/usage.csv")
    def tenant_csv(request: Request, ref: str, start: str | None = None, end: str | None = None) -> Response:
        if current_session(request) is None:
            return to_login(request)
        try:
            return db(lambda conn: usage_csv(conn, TenantStore(conn).get_tenant(ref), start, end))
        except NotFound:
            return message(request, 404, "Not found", "No such tenant.")
        except InvalidInput as exc:
            return message(request, 400, "Bad request", str(exc))

    def usage_csv(conn: Any, tenant: Any, start: str | None, end: str | None) -> Response:
        """Daily usage per model from the rollup, [from, to] inclusive (default: this month)."""
        today = now().date()
        first = _parse_day(start, today.replace(day=1))
        last = _parse_day(end, today)
        if last < first or (last - first).days > 400:
            raise InvalidInput("the range must run forwards and span at most 400 days")
        rows = conn.execute(
            """SELECT day, model, requests, failures, rejected, prompt_tokens, completion_tokens, cached_tokens,
                      total_tokens, cost_usd
               FROM usage_daily WHERE tenant_id = %s AND day >= %s AND day <= %s ORDER BY day, model""",
            (tenant.id, first, last),
        ).fetchall()
        conn.commit()
        out = io.StringIO()
        writer = csv.writer(out)
        columns = ["day", "model", "requests", "failures", "rejected", "prompt_tokens", "completion_tokens",
                   "cached_tokens", "total_tokens", "cost_usd"]  # fmt: skip
        writer.writerow(["tenant", *columns])
        for row in rows:
            writer.writerow([tenant.name, *(row[c] for c in columns)])
        filename = f"usage-{tenant.name}-{first}-{last}.csv".replace(" ", "_")
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{quote(filename)}"'},
        )

    # ---- billing health and prices ---------------------------------------------------------

    @router.get("/console/billing")
    def billing_page(request: Request) -> Response:
        if current_session(request) is None:
            return to_login(request)

        def work(conn: Any) -> dict[str, Any]:
            at = now()
            context = {
                "statuses": pages.outbox_by_status(conn, at),
                "activity": pages.relay_activity(conn),
                "customers": pages.customers_reconciliation(conn, cost_meter),
                "late_after": pages.LATE_AFTER,
                "sink": billing.sink,
            }
            conn.commit()
            return context

        return render(request, "billing.html", db(work))

    @router.get("/console/prices")
    def prices_page(request: Request, tenant: str | None = None) -> Response:
        """Read-only: the price book in force and scheduled, unpriced models, rate cards."""
        if current_session(request) is None:
            return to_login(request)
        try:
            configured, error = config_models(price_config), None
        except PriceError as exc:
            configured, error = [], str(exc)

        def work(conn: Any) -> dict[str, Any]:
            found = TenantStore(conn).get_tenant(tenant) if tenant else None
            book = pages.price_book(conn, configured, now(), found.id if found else None)
            return {**book, "tenant": found}

        try:
            context = db(work)
        except NotFound:
            return message(request, 404, "Not found", f"There is no tenant {tenant!r}.")
        return render(request, "prices.html", {**context, "error": error})

    # ---- the tenant portal -----------------------------------------------------------------

    def portal_tenant(conn: Any, token: str) -> Any:
        link = PortalLinks(conn).resolve(token)
        return TenantStore(conn).get_tenant(link.tenant_id)

    def portal_refusal(request: Request, exc: Exception) -> Response:
        if isinstance(exc, LinkGone):
            return message(
                request, 410, "Link expired", "This portal link has expired or was revoked. Ask for a new one."
            )
        return message(request, 404, "Not found", "There is no portal at this address.")

    @router.get("/portal/{token}")
    def portal(request: Request, token: str) -> Response:
        def work(conn: Any) -> dict[str, Any]:
            tenant = portal_tenant(conn, token)
            at = now()
            month = pages.month_start(at)
            days = pages.daily_series(conn, (at - timedelta(days=30)).date(), at.date(), tenant.id)
            models = pages.by_model(conn, month.date(), tenant.id)
            context = {
                "tenant": tenant,
                "token": token,
                "budget": pages.tenant_budget(conn, tenant, at),
                "invoice": pages.invoice_preview(conn, tenant, cost_meter, at),
                "days": days,
                "day_chart": charts.bar_chart(
                    [d["cost_usd"] for d in days], [d["day"].strftime("%m-%d") for d in days], title="Spend per day"
                ),
                "models": models,
                "month_total": pages.totals(models),
                "dims": pages.attribution(conn, tenant.id, month.date()),
                "month": month,
                "now": at,
            }
            conn.commit()
            return context

        try:
            return render(request, "portal.html", db(work))
        except (NotFound, LinkGone) as exc:
            return portal_refusal(request, exc)

    @router.get("/portal/{token}/usage.csv")
    def portal_csv(request: Request, token: str, start: str | None = None, end: str | None = None) -> Response:
        try:
            return db(lambda conn: usage_csv(conn, portal_tenant(conn, token), start, end))
        except (NotFound, LinkGone) as exc:
            return portal_refusal(request, exc)
        except InvalidInput as exc:
            return message(request, 400, "Bad request", str(exc))

    # ---- admin API: portal links -----------------------------------------------------------

    def require_admin(authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not admin_key or not token or not constant_time_equals(token, admin_key):
            raise HTTPException(401, "the admin API needs 'Authorization: Bearer <master key>'")

    @router.post("/admin/tenants/{ref}/portal-links", status_code=201)
    def admin_link_create(
        request: Request, ref: str, body: PortalLinkCreate | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:  # fmt: skip
        require_admin(authorization)
        days = (body or PortalLinkCreate()).expires_in_days
        link, token = db(lambda conn: PortalLinks(conn).create(ref, expires_in_days=days, created_by="admin-api"))
        return {**link.to_json(), "url": portal_url(_base_url(request), token)}

    @router.get("/admin/portal-links")
    def admin_link_list(
        tenant: str | None = None, authorization: Annotated[str | None, Header()] = None
    ) -> list[dict[str, Any]]:
        require_admin(authorization)
        return [link.to_json() for link in db(lambda conn: PortalLinks(conn).list(tenant))]

    @router.post("/admin/portal-links/{link_id}/revoke")
    def admin_link_revoke(link_id: str, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        require_admin(authorization)
        return db(lambda conn: PortalLinks(conn).revoke(link_id)).to_json()

    return router


def _https(request: Request) -> bool:
    """Served over HTTPS, directly or behind Cloud Run's front end (which terminates TLS)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _base_url(request: Request) -> str:
    base = str(request.base_url)
    return "https://" + base.split("://", 1)[1] if _https(request) and base.startswith("http://") else base


def _safe_next(target: str | None) -> str:
    """Only a console path: no open redirect through ?next=."""
    if not target or not target.startswith("/console") or target.startswith("//") or "\\" in target:
        return "/console"
    if target.startswith(("/console/login", "/console/logout")):
        return "/console"
    return target


__all__ = ["SECURITY_HEADERS", "console_router"]
