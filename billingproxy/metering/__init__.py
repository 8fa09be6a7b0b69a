"""Metering: what a request costs, its usage record, where records are written (batched, spilled,
replayed), the JSON request line, and the usage reports."""

from billingproxy.metering.accrual import WindowDelta
from billingproxy.metering.cloud_logging import logging_client
from billingproxy.metering.log_export import (
    ExportRead,
    UnreadableExport,
    read_cloud_logging,
    read_path,
    read_paths,
)
from billingproxy.metering.pricing import (
    COST_QUANTUM,
    OUTPUT_LIMITS,
    ZERO,
    ModelPrice,
    PriceError,
    PriceTable,
    RequestDimensions,
    max_cost,
    output_choices,
    output_token_limit,
    prompt_token_bound,
    request_dimensions,
)
from billingproxy.metering.record import STATUSES, UsageRecord, charged
from billingproxy.metering.replay import replay_files, replay_records
from billingproxy.metering.reports import UsageReport, usage_report
from billingproxy.metering.spill import SpillFile, read_records
from billingproxy.metering.store import UsageStore
from billingproxy.metering.writer import UsageWriter

__all__ = [
    "COST_QUANTUM",
    "OUTPUT_LIMITS",
    "STATUSES",
    "ZERO",
    "ExportRead",
    "ModelPrice",
    "PriceError",
    "PriceTable",
    "RequestDimensions",
    "SpillFile",
    "UnreadableExport",
    "UsageRecord",
    "UsageReport",
    "UsageStore",
    "UsageWriter",
    "WindowDelta",
    "charged",
    "logging_client",
    "max_cost",
    "output_choices",
    "output_token_limit",
    "prompt_token_bound",
    "read_cloud_logging",
    "read_path",
    "read_paths",
    "read_records",
    "replay_files",
    "replay_records",
    "request_dimensions",
    "usage_report",
]
