"""PostgreSQL connections and the schema migrator.

Migrations are the ordered ``db/migrations/NNNN_name.sql`` files. Each applies in its own
transaction and is recorded in ``schema_migrations`` with a checksum, under an advisory lock,
so re-running is a no-op and two migrators never race.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from billingproxy.config import REPO_ROOT, database_url
from billingproxy.db.locks import MIGRATE_LOCK
from billingproxy.errors import ConfigError

MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
PARTITION_MONTHS_AHEAD = 2


class MigrationError(ConfigError):
    """The migrations on disk and the schema in the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def connect(url: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url or database_url(), autocommit=autocommit, row_factory=dict_row)


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        migrations.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return migrations


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()
    if not exists or exists["t"] is None:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {row["version"]: row["checksum"] for row in rows}


def migrate(url: str | None = None, *, target: int | None = None, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration up to ``target`` (default: all). Returns what it applied."""
    migrations = [m for m in discover(directory) if target is None or m.version <= target]
    applied_now: list[Migration] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer     PRIMARY KEY,
                       name       text        NOT NULL,
                       checksum   text        NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = applied_versions(conn)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.path.name} was edited after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration)
            if applied_versions(conn).keys() >= {2}:
                ensure_usage_partitions(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    return applied_now


def ensure_usage_partitions(conn: psycopg.Connection, months_ahead: int = PARTITION_MONTHS_AHEAD) -> None:
    """Create this month's usage partition and the next ``months_ahead`` ones."""
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(months_ahead + 1):
        conn.execute("SELECT billingproxy_ensure_usage_partition(%s)", (month,))
        month = (month + timedelta(days=32)).replace(day=1)
