"""The billing service: the admin API over HTTP, master-key protected.

Run with ``python -m billingproxy service --port 4001`` (its own process, not inside the proxy).
The same operations as the CLI, on the same ``TenantStore``.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from billingproxy import queries, stripe_webhooks
from billingproxy.console import console_router
from billingproxy.settings import BillingSettings, database_url, master_key
from billingproxy.sinks import stripe_client
from billingproxy.tenants import InvalidInput, NotFound, TenantStore
from billingproxy.tokens import constant_time_equals


class TenantCreate(BaseModel):
    name: str
    models: list[str] | None = None
    budget_usd: str | float | None = None
    budget_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    stripe_customer_id: str | None = None


class TenantPatch(BaseModel):
    name: str | None = None
    models: list[str] | None = None
    budget_usd: str | float | None = None
    budget_period: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    stripe_customer_id: str | None = None
    status: str | None = None
    price_multiplier: str | float | None = None


class KeyCreate(BaseModel):
    tenant: str
    name: str | None = None
    expires_in_days: float | None = Field(default=None, gt=0)


class KeyRotate(BaseModel):
    grace_hours: float = Field(default=24.0, ge=0)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code}}, status)


def create_app(dsn: str | None = None, admin_key: str | None = None, billing: BillingSettings | None = None) -> FastAPI:
    app = FastAPI(title="BillingProxy billing service", docs_url=None, redoc_url=None)
    pool = ConnectionPool(dsn or database_url(), min_size=1, max_size=8, open=False, kwargs={"row_factory": dict_row})
    expected_key = admin_key or master_key()
    billing = billing or BillingSettings.from_env()
    stripe_api = stripe_client(billing) if billing.stripe_api_key else None

    @app.on_event("startup")
    def _open() -> None:
        pool.open(wait=False)

    @app.on_event("shutdown")
    def _close() -> None:
        pool.close()

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {401: "invalid_api_key", 403: "forbidden"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail))

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not expected_key or not token or not constant_time_equals(token, expected_key):
            raise HTTPException(401, "the admin API needs 'Authorization: Bearer <master key>'")

    def tenant_store() -> Iterator[TenantStore]:
        with pool.connection() as conn:
            yield TenantStore(conn)

    Store = Annotated[TenantStore, Depends(tenant_store)]
    admin = [Depends(require_admin)]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/admin/tenants", dependencies=admin)
    def list_tenants(store: Store) -> list[dict[str, Any]]:
        return [t.to_json() for t in store.list_tenants()]

    @app.post("/admin/tenants", dependencies=admin, status_code=201)
    def create_tenant(body: TenantCreate, store: Store) -> dict[str, Any]:
        data = body.model_dump()
        return store.create_tenant(data.pop("name"), **data).to_json()

    @app.get("/admin/tenants/{ref}", dependencies=admin)
    def show_tenant(ref: str, store: Store) -> dict[str, Any]:
        return store.get_tenant(ref).to_json()

    @app.patch("/admin/tenants/{ref}", dependencies=admin)
    def update_tenant(ref: str, body: TenantPatch, store: Store) -> dict[str, Any]:
        return store.update_tenant(ref, **body.model_dump(exclude_unset=True)).to_json()

    @app.post("/admin/tenants/{ref}/suspend", dependencies=admin)
    def suspend_tenant(ref: str, store: Store) -> dict[str, Any]:
        return store.set_status(ref, "suspended").to_json()

    @app.post("/admin/tenants/{ref}/resume", dependencies=admin)
    def resume_tenant(ref: str, store: Store) -> dict[str, Any]:
        return store.set_status(ref, "active").to_json()

    @app.get("/admin/keys", dependencies=admin)
    def list_keys(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
        return [k.to_json() for k in store.list_keys(tenant)]

    @app.post("/admin/keys", dependencies=admin, status_code=201)
    def create_key(body: KeyCreate, store: Store) -> dict[str, Any]:
        expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
        key, token = store.create_key(body.tenant, name=body.name, expires_at=expires)
        return {**key.to_json(), "token": token}

    @app.post("/admin/keys/{key_id}/revoke", dependencies=admin)
    def revoke_key(key_id: str, store: Store) -> dict[str, Any]:
        return store.revoke_key(key_id).to_json()

    @app.post("/admin/keys/{key_id}/rotate", dependencies=admin)
    def rotate_key(key_id: str, body: KeyRotate, store: Store) -> dict[str, Any]:
        new_key, token, old = store.rotate_key(key_id, grace=timedelta(hours=body.grace_hours))
        return {**new_key.to_json(), "token": token, "replaces": old.id, "old_key_expires_at": old.expires_at}

    @app.get("/admin/usage", dependencies=admin)
    def usage(store: Store, tenant: str, start: datetime | None = None, end: datetime | None = None) -> dict:
        """Per-model breakdown for one tenant; defaults to the current UTC month."""
        found = store.get_tenant(tenant)
        now = datetime.now(UTC)
        start = start or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = end or now + timedelta(seconds=1)
        rows = queries.tenant_breakdown(store.conn, found.id, start, end)
        return {
            "tenant_id": found.id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "models": [{k: str(v) if k == "cost_usd" else v for k, v in row.items()} for row in rows],
        }

    app.include_router(console_router(pool, expected_key, billing))

    @app.post("/stripe/webhook")
    async def stripe_webhook(
        request: Request, stripe_signature: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        """Stripe's endpoint: signature checked on the raw body, each event handled once."""
        if not billing.webhook_secret:
            return _error(503, "not_configured", "STRIPE_WEBHOOK_SECRET is not set")
        payload = await request.body()
        try:
            event = stripe_webhooks.verify(payload, stripe_signature, billing)
        except stripe_webhooks.BadWebhook as exc:
            return _error(400, "invalid_signature", str(exc))

        def process() -> stripe_webhooks.Outcome:
            with pool.connection() as conn:
                return stripe_webhooks.handle(conn, event, billing, stripe_api)

        outcome = await run_in_threadpool(process)
        return JSONResponse(outcome.to_json())

    return app
