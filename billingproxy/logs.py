"""Operational log lines (budget thresholds, writer trouble) as JSON on stdout for Cloud Logging.

``severity`` and ``message`` are the fields Cloud Logging understands; extra fields passed with
``extra={...}`` become searchable ``jsonPayload`` fields. Writing to stdout costs no network call.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_configured = False


def configure() -> None:
    """Give the ``billingproxy`` logger a JSON stdout handler (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "severity", "name": "logger"},
        )
    )
    root = logging.getLogger("billingproxy")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
