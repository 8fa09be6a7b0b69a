-- Hourly rollup per tenant: requests, failures, refusals, tokens and cost per UTC hour, so the
-- console's hourly view shows request counts and error rates without reading litellm_usage.
-- Kept by the usage writer in the same transaction as the rows it inserts (metering/store.py),
-- like usage_daily; re-rating moves its cost with the rows.
CREATE TABLE usage_hourly (
    hour         timestamptz     NOT NULL,
    tenant_id    text            NOT NULL,
    requests     bigint          NOT NULL DEFAULT 0,
    failures     bigint          NOT NULL DEFAULT 0,
    rejected     bigint          NOT NULL DEFAULT 0,
    total_tokens bigint          NOT NULL DEFAULT 0,
    cost_usd     numeric(24, 10) NOT NULL DEFAULT 0,
    -- The overview reads a range of hours for every tenant (one range scan); a tenant's page
    -- reads its own hours (the second index).
    PRIMARY KEY (hour, tenant_id)
);
CREATE INDEX usage_hourly_tenant_idx ON usage_hourly (tenant_id, hour);

-- Rows stored before this migration. Apply before deploying the code that writes the rollup.
INSERT INTO usage_hourly (hour, tenant_id, requests, failures, rejected, total_tokens, cost_usd)
SELECT date_trunc('hour', start_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', tenant_id, count(*),
       count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
       sum(total_tokens), sum(cost_usd)
FROM litellm_usage
GROUP BY 1, 2;
