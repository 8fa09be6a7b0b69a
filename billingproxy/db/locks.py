"""Every PostgreSQL advisory lock BillingProxy takes, in one place (so no two collide).

Two-key locks are ``(class, hashtext(key))``: the class says what is locked, the key which one.
"""

from __future__ import annotations

__all__ = ["CUSTOMER_POST_LOCK", "MIGRATE_LOCK", "SEAL_LOCK"]

MIGRATE_LOCK = 7_413_289_001  # one key: held by whoever applies migrations
SEAL_LOCK = 0x6270_5345  # "bpSE", key: the tenant. Sealing a tenant's closed billing windows
CUSTOMER_POST_LOCK = 0x6270_524C  # "bpRL", key: the customer. Posting (or reconciling) its meter events
