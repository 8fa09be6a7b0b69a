"""The proxy's async connection pool (auth lookups, budget grants)."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

__all__ = ["async_pool"]


def async_pool(url: str, *, application_name: str, max_size: int = 4) -> AsyncConnectionPool:
    """A closed pool with dict rows; open it inside the running loop (``await pool.open(wait=False)``)."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=2.0,
        reconnect_timeout=0,  # keep retrying forever in the background during an outage
        # A connection the database dropped (a restart, a failover) is replaced when it is taken,
        # not handed out to fail: one round trip on each take, and takes happen only on cache
        # misses and budget grants, never per request.
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": 2, "application_name": application_name, "row_factory": dict_row},
    )
