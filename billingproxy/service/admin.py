"""The admin API: tenants, keys and usage, master-key protected; the same operations as the CLI,
on the same ``TenantStore``."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict

from billingproxy.metering import usage_report
from billingproxy.metering.reports import attribution_report
from billingproxy.prices import PriceStore
from billingproxy.service.deps import AdminOnly, Store
from billingproxy.tenants import expiry_in_days, grace_hours

__all__ = ["router"]

router = APIRouter(prefix="/admin", dependencies=AdminOnly)


class Strict(BaseModel):
    """Unknown fields are refused (a typo must not be a silent no-op)."""

    model_config = ConfigDict(extra="forbid")


class TenantCreate(Strict):
    name: str
    models: list[str] | None = None
    budget_usd: str | float | None = None
    budget_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    stripe_customer_id: str | None = None


class TenantPatch(Strict):
    name: str | None = None
    models: list[str] | None = None
    budget_usd: str | float | None = None
    budget_period: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    stripe_customer_id: str | None = None
    status: str | None = None
    price_multiplier: str | float | None = None
    end_user_budget_usd: str | float | None = None
    end_user_budget_period: str | None = None


class KeyCreate(Strict):
    tenant: str
    name: str | None = None
    expires_in_days: float | None = None
    budget_usd: str | float | None = None
    budget_period: str = "monthly"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    model_rpm: list[str] = []  # "MODEL=N": the key's limit on one model
    model_tpm: list[str] = []


class KeyPatch(Strict):
    budget_usd: str | float | None = None
    budget_period: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    model_rpm: list[str] = []  # "MODEL=N" sets one model's limit, "MODEL=none" drops it
    model_tpm: list[str] = []


class EndUserBudgetPut(Strict):
    budget_usd: str | float | None  # null: this end user has no budget
    budget_period: str | None = None  # null: the tenant's end-user period


class KeyRotate(Strict):
    grace_hours: float = 24.0


@router.get("/tenants")
def list_tenants(store: Store) -> list[dict[str, Any]]:
    return [t.to_json() for t in store.list_tenants()]


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantCreate, store: Store) -> dict[str, Any]:
    data = body.model_dump()
    return store.create_tenant(data.pop("name"), **data).to_json()


@router.get("/tenants/{ref}")
def show_tenant(ref: str, store: Store) -> dict[str, Any]:
    return store.get_tenant(ref).to_json()


@router.patch("/tenants/{ref}")
def update_tenant(ref: str, body: TenantPatch, store: Store) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    multiplier = changes.pop("price_multiplier", None)
    if multiplier is not None:
        # The single markup is a rate card now (the price book prices each row with it).
        value = repr(multiplier) if isinstance(multiplier, float) else str(multiplier)
        PriceStore(store.conn).set_rate_card(
            ref, None, valid_from=datetime.now(UTC), multiplier=value, created_by="admin api", reason="tenant update"
        )
    return store.update_tenant(ref, **changes).to_json()


@router.post("/tenants/{ref}/suspend")
def suspend_tenant(ref: str, store: Store) -> dict[str, Any]:
    return store.set_status(ref, "suspended").to_json()


@router.post("/tenants/{ref}/resume")
def resume_tenant(ref: str, store: Store) -> dict[str, Any]:
    return store.set_status(ref, "active").to_json()


@router.get("/keys")
def list_keys(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    return [k.to_json() for k in store.list_keys(tenant)]


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, store: Store) -> dict[str, Any]:
    key, token = store.create_key(
        body.tenant,
        name=body.name,
        expires_at=expiry_in_days(body.expires_in_days),
        budget_usd=body.budget_usd,
        budget_period=body.budget_period,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        model_rpm=body.model_rpm,
        model_tpm=body.model_tpm,
    )
    return {**key.to_json(), "token": token}


@router.patch("/keys/{key_id}")
def update_key(key_id: str, body: KeyPatch, store: Store) -> dict[str, Any]:
    """Only the fields sent change; null clears a budget or limit."""
    return store.update_key(key_id, **body.model_dump(exclude_unset=True)).to_json()


@router.get("/end-users")
def list_end_user_budgets(store: Store, tenant: str) -> list[dict[str, Any]]:
    """The tenant's per-end-user budget overrides."""
    return [b.to_json() for b in store.list_end_user_budgets(tenant)]


@router.put("/end-users/{tenant}/{end_user}")
def set_end_user_budget(tenant: str, end_user: str, body: EndUserBudgetPut, store: Store) -> dict[str, Any]:
    return store.set_end_user_budget(
        tenant, end_user, budget_usd=body.budget_usd, budget_period=body.budget_period
    ).to_json()


@router.delete("/end-users/{tenant}/{end_user}")
def clear_end_user_budget(tenant: str, end_user: str, store: Store) -> dict[str, Any]:
    return {"tenant": tenant, "end_user": end_user, "removed": store.clear_end_user_budget(tenant, end_user)}


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, store: Store) -> dict[str, Any]:
    return store.revoke_key(key_id).to_json()


@router.post("/keys/{key_id}/rotate")
def rotate_key(key_id: str, store: Store, body: Annotated[KeyRotate | None, Body()] = None) -> dict[str, Any]:
    """The body is optional: the grace period defaults to 24 h."""
    body = body or KeyRotate()
    new_key, token, old = store.rotate_key(key_id, grace=grace_hours(body.grace_hours))
    return {**new_key.to_json(), "token": token, "replaces": old.id, "old_key_expires_at": old.expires_at}


@router.get("/usage")
def usage(
    store: Store, tenant: str, start: datetime | None = None, end: datetime | None = None, by: str = "model"
) -> dict:
    """One tenant's breakdown by model (default), end_user, tag or key; defaults to the current
    UTC month. Below the tenant the report is per whole UTC day (the rollup's grain)."""
    found = store.get_tenant(tenant)
    now = datetime.now(UTC)
    start = start or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = end or now + timedelta(seconds=1)
    if by == "model":
        return usage_report(store.conn, found.id, start, end).to_json()
    last = end.date() if end.timetz().replace(tzinfo=None) == time(0) else end.date() + timedelta(days=1)
    return attribution_report(store.conn, found.id, by.replace("-", "_"), start.date(), last).to_json()
