"""Stripe's webhook endpoint: signature checked on the raw body, each event handled once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from billingproxy.billing import webhooks
from billingproxy.service.deps import state
from billingproxy.service.errors import error_response

__all__ = ["router"]

router = APIRouter()


@router.post("/stripe/webhook")
async def stripe_webhook(request: Request, stripe_signature: Annotated[str | None, Header()] = None) -> JSONResponse:
    service = state(request)
    if not (service.billing.webhook_secret or service.billing.event_destination_secret):
        return error_response(
            503, "not_configured", "neither STRIPE_WEBHOOK_SECRET nor STRIPE_EVENT_DESTINATION_SECRET is set"
        )
    payload = await request.body()
    try:
        event = webhooks.verify(payload, stripe_signature, service.billing)
    except webhooks.BadWebhook as exc:
        return error_response(400, "invalid_signature", str(exc))

    def process() -> webhooks.Outcome:
        with service.pool.connection() as conn:
            return webhooks.handle(conn, event, service.billing, service.stripe_api)

    outcome = await run_in_threadpool(process)
    return JSONResponse(outcome.to_json())
