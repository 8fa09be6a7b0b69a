"""PostgreSQL: connections, the schema migrator and the advisory locks."""

from billingproxy.db.locks import CUSTOMER_POST_LOCK, MIGRATE_LOCK, SEAL_LOCK
from billingproxy.db.migrate import (
    MIGRATIONS_DIR,
    Migration,
    MigrationError,
    applied_versions,
    connect,
    discover,
    ensure_usage_partitions,
    migrate,
)
from billingproxy.db.pool import async_pool

__all__ = [
    "CUSTOMER_POST_LOCK",
    "MIGRATE_LOCK",
    "MIGRATIONS_DIR",
    "SEAL_LOCK",
    "Migration",
    "MigrationError",
    "applied_versions",
    "async_pool",
    "connect",
    "discover",
    "ensure_usage_partitions",
    "migrate",
]
