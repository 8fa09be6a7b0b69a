"""The shape of the code, checked: one writer module per table, every Stripe call in one module,
every environment variable documented, public names only from tests and benchmarks.

The layer contracts themselves are import-linter's (``lint-imports`` in ``make lint``, configured in
pyproject.toml); reading the environment outside billingproxy/config.py is ruff's TID251.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "billingproxy"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# table → the one module allowed to change it (README "Architecture", "where is…").
WRITERS = {
    "tenants": "billingproxy/tenants/store.py",
    "api_keys": "billingproxy/tenants/store.py",
    "end_user_budgets": "billingproxy/tenants/store.py",
    "litellm_usage": "billingproxy/metering/store.py",
    "usage_daily": "billingproxy/metering/store.py",
    "usage_daily_attribution": "billingproxy/metering/store.py",
    "usage_hourly": "billingproxy/metering/store.py",
    "billing_accrual": "billingproxy/metering/accrual.py",
    "billing_outbox": "billingproxy/billing/outbox.py",
    "billing_carry": "billingproxy/billing/outbox.py",
    "budget_spend": "billingproxy/budgets/postgres_store.py",
    "budget_leases": "billingproxy/budgets/postgres_store.py",
    "stripe_webhook_events": "billingproxy/billing/webhooks.py",
    "stripe_subscriptions": "billingproxy/billing/webhooks.py",
    "schema_migrations": "billingproxy/db/migrate.py",
    "portal_links": "billingproxy/service/console/links.py",
    "price_versions": "billingproxy/prices/store.py",
    "rate_cards": "billingproxy/prices/store.py",
    "rerate_runs": "billingproxy/prices/store.py",
}
_WRITE = r"(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|TRUNCATE(?:\s+TABLE)?)\s+{table}\b"


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def writers_of(table: str, sources: list[Path] = SOURCES) -> set[str]:
    pattern = re.compile(_WRITE.format(table=re.escape(table)), re.IGNORECASE)
    return {_relative(path) for path in sources if pattern.search(path.read_text())}


def test_every_table_of_the_schema_has_an_owner():
    migrations = "\n".join(p.read_text() for p in sorted((REPO / "db" / "migrations").glob("*.sql")))
    created = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)\s*\(", migrations, re.IGNORECASE))
    created.discard("schema_migrations")  # created by the migrator itself
    assert created <= set(WRITERS), f"tables without an owner in WRITERS: {sorted(created - set(WRITERS))}"


@pytest.mark.parametrize("table", sorted(WRITERS))
def test_one_writer_module_per_table(table):
    assert writers_of(table) == {WRITERS[table]}


def test_a_second_writer_is_caught(tmp_path):
    """The check itself can fail: a stray UPDATE elsewhere is reported."""
    stray = tmp_path / "stray.py"
    stray.write_text('SQL = """UPDATE billing_outbox SET status = \'sent\'"""\n')
    assert len(writers_of("billing_outbox", [*SOURCES, stray])) == 2


STRIPE_CALL = re.compile(r"\.v[12]\.(?:billing|core|customers|subscriptions|invoices)\b|stripe\.Webhook")


def test_every_stripe_call_is_in_stripe_api():
    callers = {_relative(path) for path in SOURCES if STRIPE_CALL.search(path.read_text())}
    assert callers == {"billingproxy/billing/stripe_api.py"}


def _config_variables() -> set[str]:
    tree = ast.parse((PACKAGE / "config.py").read_text())
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", node.value)
    }
    exported = {
        elt.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for elt in node.value.elts
    }
    return names - exported  # REPO_ROOT is a name, not a variable


def _readme_configuration_table() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_every_variable_config_reads_is_in_the_readme_table():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})(?:=[^`]*)?`", _readme_configuration_table()))
    variables = _config_variables()
    assert len(variables) > 30  # the scan found the variables (it can fail)
    assert variables - documented == set()


def test_only_config_reads_the_environment():
    """Belt and braces for ruff's TID251: no os.environ / os.getenv outside config.py."""
    readers = {
        _relative(path)
        for path in [*SOURCES, *sorted((REPO / "callbacks").glob("*.py"))]
        if re.search(r"\bos\.(?:environ|getenv|putenv)\b(?!/)|from os import .*\benviron\b", path.read_text())
    }
    assert readers == {"billingproxy/config.py"}


def test_every_package_declares_all():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            continue  # the top package only carries the version
        tree = ast.parse(init.read_text())
        declared = [n for n in tree.body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]  # fmt: skip
        assert declared, f"{_relative(init)} declares no __all__"


PRIVATE_IMPORT = re.compile(r"from billingproxy[\w.]* import \(?[^)]*?\b_[a-z]\w*|billingproxy(?:\.\w+)+\._[a-z]\w*")


def test_tests_and_benchmarks_use_public_names_only():
    offenders = []
    for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]):
        if path == Path(__file__):
            continue
        for match in PRIVATE_IMPORT.finditer(path.read_text()):
            offenders.append(f"{_relative(path)}: {match.group(0)}")
    assert offenders == []


def test_benchmarks_do_not_import_the_test_suite():
    offenders = [
        _relative(path)
        for path in sorted((REPO / "bench").rglob("*.py"))
        if re.search(r"^\s*(?:from|import) tests\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
