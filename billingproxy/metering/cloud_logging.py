"""The Cloud Logging API client ``usage replay --from-cloud-logging`` reads request lines with."""

from __future__ import annotations

from typing import Any

__all__ = ["logging_client"]


def logging_client(project: str, endpoint: str | None = None) -> Any:
    """A ``google.cloud.logging.Client`` on REST: Application Default Credentials (on Cloud Run,
    the service account; locally ``gcloud auth application-default login``), or, with an
    ``endpoint`` (tests: a local fake of ``entries:list``), no credentials at all."""
    from google.cloud import logging as cloud_logging  # imported on use: heavy, and CLI-only

    if endpoint is None:
        return cloud_logging.Client(project=project, _use_grpc=False)
    from google.auth.credentials import AnonymousCredentials

    return cloud_logging.Client(
        project=project,
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": endpoint},
    )
