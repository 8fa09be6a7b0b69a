"""The billing service (FastAPI): the admin API, Stripe's webhook endpoint. The only package that
imports fastapi (besides ``callbacks/``, which LiteLLM's custom auth hands a fastapi Request)."""

from billingproxy.service.app import create_app

__all__ = ["create_app"]
