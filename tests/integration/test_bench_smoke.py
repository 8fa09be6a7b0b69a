"""The benchmark commands the README quotes still run (on a small ledger): a benchmark that rots
silently leaves the README's numbers unreproducible."""

from __future__ import annotations

import re
import subprocess
import sys

from testkit.support import REPO


def test_console_bench_runs_on_a_small_ledger(pg_server: str) -> None:
    command = [sys.executable, "-m", "bench.console_bench", "--server-url", pg_server]
    result = subprocess.run(
        [*command, "--rows", "3000", "--tenants", "6", "--days", "3", "--repeat", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("overview (by day)", "overview (by hour)", "tenant detail", "billing health", "portal"):
        assert f"| {page} |" in result.stdout, page
    for rollup in ("usage_hourly", "usage_daily_attribution"):  # the pages read these: they were filled
        filled = re.search(rf"{rollup} ([\d,]+)", result.stdout)
        assert filled and int(filled.group(1).replace(",", "")) > 0, rollup
