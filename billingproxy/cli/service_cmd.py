"""``service``: run the billing service (admin API, Stripe webhooks)."""

from __future__ import annotations

import click

from billingproxy.config import master_key, service_port

__all__ = ["command"]


@click.command("service")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: $PORT or 4001.")
def command(host: str, port: int | None) -> None:
    """Run the billing service (admin API, Stripe webhooks)."""
    import uvicorn

    from billingproxy.service import create_app

    if not master_key():
        click.echo(
            "WARNING: PROXY_MASTER_KEY (or LITELLM_MASTER_KEY) is not set: the admin API refuses every request",
            err=True,
        )
    uvicorn.run(create_app(), host=host, port=port or service_port(), log_level="warning")
