"""The locust mix (tests/load/locustfile.py) headless against the real proxy: several tenants,
streaming and not, embeddings, upstream errors. Every request that reached the provider is
exactly one usage row."""

from __future__ import annotations

import csv
import subprocess
import uuid

from billingproxy import db
from billingproxy.tenants import TenantStore
from testkit.support import REPO, VENV_BIN, wait_until


def test_the_locust_mix_runs_and_every_request_is_one_usage_row(proxy, upstream, database_url, tmp_path) -> None:
    with db.connect(database_url) as conn:
        store = TenantStore(conn)
        tenants = [store.create_tenant(f"load-{uuid.uuid4().hex[:8]}") for _ in range(3)]
        tokens = [store.create_key(tenant.id)[1] for tenant in tenants]
    upstream_before = sum(upstream.calls.values())
    run = subprocess.run(
        [str(VENV_BIN / "locust"), "-f", str(REPO / "tests/load/locustfile.py"), "--headless", "-u", "12", "-r", "12",
         "-t", "6s", "--host", proxy.url, "--csv", str(tmp_path / "mix"), "--only-summary", "--stop-timeout", "10"],
        env={"PATH": str(VENV_BIN), "BP_TOKENS": ",".join(tokens)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    with open(tmp_path / "mix_stats.csv") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    total = int(rows["Aggregated"]["Request Count"])
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    # Every kind ran (how many requests fit in 6 s depends on the machine: that is a benchmark's job).
    assert {"chat", "chat-stream", "chat-error", "/v1/embeddings"} <= set(rows) and total >= 4

    ids = [tenant.id for tenant in tenants]

    def stored() -> int:
        with db.connect(database_url) as conn:
            query = "SELECT count(*) AS n FROM litellm_usage WHERE tenant_id = ANY(%s)"
            return conn.execute(query, (ids,)).fetchone()["n"]

    reached_upstream = sum(upstream.calls.values()) - upstream_before
    assert reached_upstream >= total  # locust's final CSV misses the last second of the run
    wait_until(lambda: stored() >= reached_upstream, timeout=30, what="a usage row per request")
    with db.connect(database_url) as conn:
        breakdown = conn.execute(
            "SELECT call_type, status, stream, http_status, count(*) AS n FROM litellm_usage"
            " WHERE tenant_id = ANY(%s) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            (ids,),
        ).fetchall()
    sent = {name: row["Request Count"] for name, row in rows.items()}
    assert stored() == reached_upstream, (sent, [tuple(row.values()) for row in breakdown])  # none lost, none twice
