"""``python -m billingproxy portal …``: read-only tenant portal links."""

from __future__ import annotations

import click

from billingproxy.cli.output import emit, json_option, table, tenant_store
from billingproxy.config import public_url
from billingproxy.service.console.links import DEFAULT_DAYS, MAX_DAYS, PortalLinks, portal_url

__all__ = ["command"]


@click.group("portal")
def command() -> None:
    """Tenant portal links: a read-only page of one tenant's usage, budget and invoice preview."""


@command.command("link")
@click.argument("tenant_ref", metavar="TENANT")
@click.option(
    "--expires-in-days", type=click.FloatRange(min=0, min_open=True, max=MAX_DAYS), default=DEFAULT_DAYS,
    show_default=True,
)  # fmt: skip
@click.option("--base-url", default=None, help="The billing service's public URL (default: $BILLINGPROXY_PUBLIC_URL).")
@json_option
def portal_link(tenant_ref: str, expires_in_days: float, base_url: str | None, as_json: bool) -> None:
    """Issue a portal link for a tenant (printed once; only its hash is stored)."""
    with tenant_store() as store:
        link, token = PortalLinks(store.conn).create(tenant_ref, expires_in_days=expires_in_days, created_by="cli")
    url = portal_url(base_url or public_url(), token)
    data = {**link.to_json(), "url": url}

    def human() -> None:
        click.echo(f"portal link {link.id} for {link.tenant_id}, valid until {data['expires_at']}:\n{url}")
        click.echo("Send it to the tenant now: it is shown once and kept only as a hash.")

    emit(data, as_json, human)


@command.command("list")
@click.option("--tenant", "tenant_ref", default=None, help="Only this tenant's links.")
@json_option
def portal_list(tenant_ref: str | None, as_json: bool) -> None:
    """List portal links (never their URLs)."""
    with tenant_store() as store:
        links = [link.to_json() for link in PortalLinks(store.conn).list(tenant_ref)]
    emit(
        links,
        as_json,
        lambda: table(links, ["id", "tenant_id", "state", "created_at", "expires_at", "created_by"]),
    )


@command.command("revoke")
@click.argument("link_id")
@json_option
def portal_revoke(link_id: str, as_json: bool) -> None:
    """Revoke a portal link: it answers 410 from now on."""
    with tenant_store() as store:
        revoked = PortalLinks(store.conn).revoke(link_id)
    emit(revoked.to_json(), as_json, lambda: click.echo(f"revoked {revoked.id}"))
