"""Browser fixtures: Debian's Chromium driven by Playwright's Python API, never a downloaded browser.

Where no Chromium is installed the browser tests FAIL under CI (``CI`` set, as .ci/run runs,
which installs it) and are SKIPPED elsewhere with a reason naming the missing binary, which
pytest's ``-ra`` summary prints: the run says so loudly instead of passing quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.support import MASTER_KEY, REPO, free_port, wait_until

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}. Install it with `apt-get install -y chromium` (.ci/run does)."
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        _missing(f"no Chromium binary at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright Python package is not installed (requirements-dev.txt)")
    return path


class BillingService:
    """``python -m billingproxy service`` as its own process, like ``make run`` starts it."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"service-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET")}
        env.update(
            DATABASE_URL=database_url,
            PROXY_MASTER_KEY=MASTER_KEY,
            PYTHONPATH=str(REPO),
            BILLINGPROXY_PUBLIC_URL=self.url,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "billingproxy", "service", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=open(self.log, "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=60, what="the billing service")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"billing service exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def billing_service(database_url: str, tmp_path_factory) -> Iterator[BillingService]:
    service = BillingService(database_url, tmp_path_factory.mktemp("service"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def browser_context(chromium_path: str, tmp_path_factory):
    """A fresh profile per module; headless Chromium with the flags of the project's rules."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1180, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()
