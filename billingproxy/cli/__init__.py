"""``python -m billingproxy``: the operator CLI. DATABASE_URL comes from the environment.

The one translation of the error tree for the CLI: any ``BillingProxyError`` becomes one line on
stderr (``Error: …``) and exit code 1 — never a traceback; so does a database that cannot be reached.
"""

from __future__ import annotations

import sys

import click
import psycopg

from billingproxy.errors import BillingProxyError

__all__ = ["main", "run"]


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BillingProxyError as exc:
            raise click.ClickException(exc.message) from None
        except psycopg.OperationalError as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"cannot reach the database: {first_line}") from None


@click.group(cls=Group)
def main() -> None:
    """BillingProxy operator CLI."""


def _register() -> None:
    from billingproxy.cli import (
        db_cmd,
        doctor_cmd,
        end_user_cmd,
        key_cmd,
        portal_cmd,
        prices_cmd,
        service_cmd,
        stripe_cmd,
        tenant_cmd,
        usage_cmd,
    )

    modules = (
        db_cmd,
        tenant_cmd,
        key_cmd,
        end_user_cmd,
        usage_cmd,
        stripe_cmd,
        service_cmd,
        doctor_cmd,
        portal_cmd,
        prices_cmd,
    )
    for module in modules:
        main.add_command(module.command)
    main.add_command(prices_cmd.ratecard_command)


_register()


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
