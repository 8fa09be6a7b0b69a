"""The billing service: the admin API and Stripe's webhook endpoint over HTTP.

Run with ``python -m billingproxy service --port 4001`` (its own process, not inside the proxy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from billingproxy.billing import StripeApi, stripe_client
from billingproxy.config import BillingSettings, database_url, master_key
from billingproxy.service import admin, prices_admin, stripe_webhook
from billingproxy.service.console import console_router
from billingproxy.service.deps import ServiceState
from billingproxy.service.errors import install_error_handlers

__all__ = ["create_app"]

_JSON = (b"content-type", b"application/json")


class AdminBodiesAreJson:
    """The admin API's bodies are JSON whatever the request says: ``curl -d '{…}'`` (the README's
    examples, and how most operators paste them) sends ``application/x-www-form-urlencoded``, which
    FastAPI would hand to the model as a string. A body that is not JSON still gets a 400."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/admin/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, _JSON]}
        await self.app(scope, receive, send)


def create_app(dsn: str | None = None, admin_key: str | None = None, billing: BillingSettings | None = None) -> FastAPI:
    billing = billing or BillingSettings.from_env()
    # A short wait for a connection: with the database down the API answers 503 in seconds, not 30.
    pool = ConnectionPool(
        dsn or database_url(), min_size=1, max_size=8, open=False, timeout=5, kwargs={"row_factory": dict_row}
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="BillingProxy billing service", docs_url=None, redoc_url=None, lifespan=lifespan)
    admin_key = admin_key or master_key()
    app.state.billingproxy = ServiceState(
        pool=pool,
        admin_key=admin_key,
        billing=billing,
        stripe_api=StripeApi(stripe_client(billing)) if billing.stripe_api_key else None,
    )
    install_error_handlers(app)
    app.add_middleware(AdminBodiesAreJson)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(admin.router)
    app.include_router(prices_admin.router)
    app.include_router(stripe_webhook.router)
    app.include_router(console_router(pool, admin_key, billing))
    return app
