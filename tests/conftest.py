"""Session fixtures on real parts: PostgreSQL, the fake upstream, a real litellm proxy."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.fakes.stripe_api import FakeStripe
from testkit.fakes.upstream import FakeUpstream
from testkit.support import (
    GATEWAY_TENANT,
    GATEWAY_TOKEN,
    EmbeddedPostgres,
    ProxyProcess,
    create_database,
    create_migrated_database,
    drop_database,
    test_config,
)


def pytest_configure(config: pytest.Config) -> None:
    """A private base temp dir per run: pytest's shared default keeps only the last three runs' dirs,
    so two suites running at once on one machine would delete each other's PostgreSQL data."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="billingproxy-pytest-")
        config._billingproxy_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    own = getattr(config, "_billingproxy_basetemp", None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> Iterator[str]:
    """A server URL: TEST_DATABASE_URL if set, else a private embedded PostgreSQL."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    yield server.url()
    server.destroy()


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """One migrated database shared by the session (tests use their own tenants)."""
    url = create_migrated_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture
def fresh_database(pg_server: str) -> Iterator[str]:
    """An empty database of the test's own (no migrations applied)."""
    url = create_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture
def billing_db(pg_server: str) -> Iterator[str]:
    """A migrated database of the test's own: its outbox holds only this test's entries."""
    url = create_migrated_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture
def private_pg(tmp_path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, so it can be stopped without hurting others."""
    server = EmbeddedPostgres(tmp_path / "pgdata")
    yield server
    server.destroy()


@pytest.fixture
def private_db(private_pg: EmbeddedPostgres) -> str:
    return create_migrated_database(private_pg.url())


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def store(conn: psycopg.Connection) -> TenantStore:
    return TenantStore(conn)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxy_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="session")
def proxy(proxy_workdir: Path, upstream: FakeUpstream, database_url: str) -> Iterator[ProxyProcess]:
    """The real proxy with our plugins, started once per session."""
    process = ProxyProcess(
        proxy_workdir,
        test_config(upstream.base_url),
        {
            "BILLINGPROXY_DATABASE_URL": database_url,
            "BILLINGPROXY_AUTH_CACHE_TTL": "1",
            "BILLINGPROXY_BILLING_WINDOW_S": "1",  # short billing windows: the relay tests seal at once
            "PROXY_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "PROXY_GATEWAY_TENANT": GATEWAY_TENANT,
        },
    ).start()
    yield process
    process.stop()
