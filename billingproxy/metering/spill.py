"""The spill file: where usage records wait on local disk when they cannot wait in memory (queue
full, database down at shutdown), and the reader that brings them (or exported JSON log lines) back.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO

from billingproxy.metering.record import UsageRecord

__all__ = ["SpillFile", "read_records"]


class SpillFile:
    """Append-only JSON lines of records that could not wait in memory.

    The owning process holds an exclusive ``flock`` while the file is open, so another writer
    re-ingests a file only once its owner has closed it (or died).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[str] | None = None
        self._lock = threading.Lock()  # the request path (queue full) and the writer thread both append
        self.spilled = 0

    def append(self, records: Iterable[UsageRecord]) -> None:
        with self._lock:
            self._append(records)

    def _append(self, records: Iterable[UsageRecord]) -> None:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"usage-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
            self._file = open(self.directory / name, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for record in records:
            self._file.write(record.to_json_line() + "\n")
            self.spilled += 1
        self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def claim_closed_files(self) -> Iterator[Path]:
        """Spill files nobody is writing: lock each before yielding it, skip the busy ones."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("usage-*.jsonl")):
            if self._file is not None and path.name == Path(self._file.name).name:
                continue
            try:
                with open(path, encoding="utf-8") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    yield path
            except (BlockingIOError, FileNotFoundError):
                continue


def read_records(path: Path) -> Iterator[UsageRecord]:
    """Records from a spill file or exported JSON log lines; other lines are skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line, parse_float=Decimal)  # money stays exact
            except json.JSONDecodeError:
                continue  # a torn last line from a crash; its record is elsewhere or never queued
            if isinstance(data, dict) and "jsonPayload" in data:  # `gcloud logging read` export
                data = data["jsonPayload"]
            if isinstance(data, dict) and data.get("request_id") and data.get("tenant_id"):
                yield UsageRecord.from_json(data)
