-- Attribution below the tenant: who the tenant's own customer was (end_user), the request's
-- tags, and the id the client sent as x-request-id. Validated at admission (bounded length,
-- count and charset), so the columns hold no prompt text and no unbounded values.
-- Adding nullable columns / a constant default is a catalogue change only (no table rewrite).
ALTER TABLE litellm_usage
    ADD COLUMN end_user          text,
    ADD COLUMN tags              text[] NOT NULL DEFAULT '{}',
    ADD COLUMN client_request_id text;

-- Row-level drill-downs (a tenant's end user, key or tag over a time range). The reports read
-- the rollup below; these serve ad-hoc queries and the row-level checks.
CREATE INDEX litellm_usage_tenant_end_user_time_idx ON litellm_usage (tenant_id, end_user, start_time)
    WHERE end_user IS NOT NULL;
CREATE INDEX litellm_usage_tenant_key_time_idx ON litellm_usage (tenant_id, api_key_id, start_time);
CREATE INDEX litellm_usage_tags_idx ON litellm_usage USING gin (tags)
    WHERE tags <> '{}';

-- Daily rollup per tenant and dimension value: dimension 'end_user', 'tag' (one row per tag:
-- a request with two tags counts under both) or 'key'. Kept by the usage writer in the same
-- transaction as the rows it inserts (billingproxy/metering/store.py), like usage_daily.
CREATE TABLE usage_daily_attribution (
    tenant_id         text            NOT NULL,
    dimension         text            NOT NULL CHECK (dimension IN ('end_user', 'tag', 'key')),
    day               date            NOT NULL,
    value             text            NOT NULL,
    requests          bigint          NOT NULL DEFAULT 0,
    failures          bigint          NOT NULL DEFAULT 0,
    rejected          bigint          NOT NULL DEFAULT 0,
    prompt_tokens     bigint          NOT NULL DEFAULT 0,
    completion_tokens bigint          NOT NULL DEFAULT 0,
    cached_tokens     bigint          NOT NULL DEFAULT 0,
    total_tokens      bigint          NOT NULL DEFAULT 0,
    cost_usd          numeric(24, 10) NOT NULL DEFAULT 0,
    -- A report is one tenant, one dimension, a day range: one index range scan.
    PRIMARY KEY (tenant_id, dimension, day, value)
);

-- The key dimension for rows stored before this migration (end users and tags are new: none
-- before). Apply before deploying the code that writes the rollup: rows an old writer stores
-- after this statement's snapshot are in litellm_usage but not here.
INSERT INTO usage_daily_attribution (tenant_id, dimension, day, value, requests, failures, rejected,
                                     prompt_tokens, completion_tokens, cached_tokens, total_tokens, cost_usd)
SELECT tenant_id, 'key', (start_time AT TIME ZONE 'UTC')::date, api_key_id,
       count(*), count(*) FILTER (WHERE status = 'failure'), count(*) FILTER (WHERE status = 'rejected'),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(total_tokens), sum(cost_usd)
FROM litellm_usage
WHERE api_key_id IS NOT NULL
GROUP BY 1, 3, 4;
