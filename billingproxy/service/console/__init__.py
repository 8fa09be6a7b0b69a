"""The operator console and the tenant portal, served by the billing service.

``console_router(pool, master_key, billing)`` is included by ``billingproxy.service.create_app``;
``billingproxy.cli.portal_cmd`` is the ``python -m billingproxy portal`` command group.
"""

from billingproxy.service.console.web import console_router

__all__ = ["console_router"]
