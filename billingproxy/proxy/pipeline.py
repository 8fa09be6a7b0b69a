"""The post-call pipeline: a finished request's usage record is built, its budget reservation
settled, its JSON line written and its row queued, in that order, with no I/O but stdout."""

from __future__ import annotations

from typing import Any

from billingproxy.metering import UsageRecord, request_log
from billingproxy.proxy import inflight, runtime
from billingproxy.proxy.payload import record_from_payload

__all__ = ["record_usage"]


def record_usage(payload: dict[str, Any], **outcome: Any) -> UsageRecord | None:
    """Build the request's usage record, settle its budget reservation and queue the record."""
    settings = runtime.settings()
    record = record_from_payload(
        payload,
        runtime.prices(),
        bill_cache_hits=settings.bill_cache_hits,
        price_book=runtime.price_book(),
        **outcome,
    )
    if record is not None:
        inflight.end(record.request_id)
        runtime.budgets().settle(record.request_id, record.cost_usd)
        if settings.request_log:
            request_log.emit(record, settings.project_id)
        if settings.write_usage:
            runtime.writer().submit(record)
    return record
