"""Migrations: ordered, recorded, idempotent, and each one applies on a database at the previous one."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from click.testing import CliRunner

from billingproxy import db
from billingproxy.cli import main as cli


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_migrate_twice_is_a_no_op(fresh_database):
    first = db.migrate(fresh_database)
    assert [m.version for m in first] == [m.version for m in db.discover()]
    before = tables(fresh_database)
    assert db.migrate(fresh_database) == []
    assert tables(fresh_database) == before
    with db.connect(fresh_database) as conn:
        assert set(db.applied_versions(conn)) == {m.version for m in db.discover()}


@pytest.mark.parametrize("version", [m.version for m in db.discover()][1:])
def test_each_migration_applies_on_top_of_the_previous_one(fresh_database, version):
    previous = max(m.version for m in db.discover() if m.version < version)
    assert [m.version for m in db.migrate(fresh_database, target=previous)][-1] == previous
    with db.connect(fresh_database) as conn:
        assert max(db.applied_versions(conn)) == previous
    applied = db.migrate(fresh_database, target=version)
    assert [m.version for m in applied] == [version]


def test_an_edited_migration_is_refused(fresh_database, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, folder)
    db.migrate(fresh_database, directory=folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(db.MigrationError, match="edited after it was applied"):
        db.migrate(fresh_database, directory=folder)


def test_migrate_creates_usage_partitions_ahead(fresh_database):
    db.migrate(fresh_database)
    partitions = {name for name in tables(fresh_database) if name.startswith("litellm_usage_")}
    assert len(partitions) >= 3  # this month and the next two


def test_cli_migrate(fresh_database, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    result = CliRunner().invoke(cli, ["db", "migrate"])
    assert result.exit_code == 0 and "applied 0001_tenants_and_keys.sql" in result.output
    again = CliRunner().invoke(cli, ["db", "migrate"])
    assert again.exit_code == 0 and "schema is up to date" in again.output


def test_cli_without_database_url_says_so(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("BILLINGPROXY_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["tenant", "list"])
    assert result.exit_code == 1 and "DATABASE_URL is not set" in result.output
